"""State: the SQLite database (`db`), its versioned migrations, the key-value
`settings` table (`kv`) and the serve heartbeat (`status`). Imports only config."""
