"""The running appliance: `wiring` (the only composition root: it names the
concrete servers and `webui.create_app`, and resolves the one runtime config),
`serve`, the supervisor, the web workers, stateless mode."""
