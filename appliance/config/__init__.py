"""Configuration: the schema of every key (`schema`), its validators, MAC addresses
(`macs`), and how the file, the admin's overrides and the confirmed network
settings resolve into the one `Config` the services run with (`resolve`).
Imports nothing above it."""
