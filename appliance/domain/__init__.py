"""Domain services every front end calls (web UI, REST API, CLI): hosts, flakes,
builds, generations, leases, events, users, tokens, settings, the agent. Each
takes a connection and returns records; nothing here runs Nix or touches links."""
