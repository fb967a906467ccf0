# The JSON config of `nixie serve` as NixOS options: one option per key of
# SCHEMA in appliance/config/schema.py, same dotted names, same defaults.
#
# A function of `lib` alone (mkOption and types), so the router module uses it
# with nixpkgs' lib and tests/unit/test_nixos_options.py evaluates it with a
# small stand-in lib, without nixpkgs, and compares it with SCHEMA.
#
# Adding a key to SCHEMA: add its one line here (the test prints the line).
{ lib }:
let
  inherit (lib) types;

  opt = type: default: description: lib.mkOption { inherit type default description; };

  str = types.nonEmptyStr;
  optStr = types.nullOr types.str;
  path = types.nonEmptyStr; # a run-time path, never copied into the store
  optPath = types.nullOr path;
  ipv4 = types.strMatching "[0-9]{1,3}(\\.[0-9]{1,3}){3}";
  cidr = types.strMatching "[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}";
  ipv6 = types.strMatching "[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*";
  cidr6 = types.strMatching "[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*/64";
  listen = types.strMatching "([[][0-9A-Fa-f:.]+[]]|[0-9.]+|[0-9A-Fa-f:]+):[0-9]{1,5}";
  # a list of HOST:PORT; a single string is accepted as a list of one
  listenList = types.coercedTo listen (l: [ l ]) (types.listOf listen);
  between = types.ints.between;
  listOfStr = types.listOf str;

  options = {
    state_dir = opt path "/var/lib/nixie" "Directory for run-time state: nixie.db, GC roots, caches, logs.";
    locked = opt (types.listOf str) [ ] "Dotted keys this file pins (the NixOS module lists the options it sets): the web UI, the API and the CLI show them read-only and cannot override them.";
    log_level = opt (types.enum [ "debug" "info" "warning" "error" ]) "info" "Minimum level of the structured log lines on stderr.";

    lan = {
      interface = opt str "eth0" "The LAN interface the boot services answer on.";
      address = opt cidr "10.0.0.1/24" "The router's LAN address with prefix; DHCP serves this network.";
      domain = opt str "lan" "DNS domain of LAN hosts and leases.";
      address6 = opt (types.nullOr cidr6) null "The router's LAN IPv6 address in a /64; null means a ULA /64 generated at first start and kept (settings key lan.ula), the router taking ::1 in it. Router advertisements and DHCPv6 serve this prefix.";
    };

    wan = {
      interface = opt optStr null "The uplink interface; null when the router has no WAN role.";
      address = opt (types.nullOr cidr) null "Static WAN address with prefix; null means DHCP client on the WAN.";
      gateway = opt (types.nullOr ipv4) null "Default gateway for a static WAN.";
      nat = opt types.bool true "Masquerade LAN traffic leaving through the WAN.";
    };

    dhcp = {
      mode = opt (types.enum [ "authoritative" "proxy" "off" ]) "authoritative" "authoritative: hand out addresses; proxy: only boot information next to another DHCP server; off.";
      range = opt (types.addCheck (types.listOf ipv4) (l: builtins.length l == 2)) [ "10.0.0.100" "10.0.0.199" ] "[first, last] of the dynamic pool (authoritative mode).";
      lease_seconds = opt (between 60 31536000) 3600 "Lease time handed to clients.";
      router = opt (types.nullOr ipv4) null "Router option (3); null means the LAN address.";
      dns_servers = opt (types.nullOr (types.listOf ipv4)) null "DNS servers option (6); null means the LAN address.";
      conflict_check = opt types.bool false "Ping an address before offering it.";
      unknown_clients = opt (types.enum [ "menu" "local" "ignore" ]) "menu" "What PXE clients with no host record get: the boot menu, boot from local disk, or no boot answer.";
      lease_sync = opt (types.enum [ "full" "normal" ]) "full" "How a lease is on disk before its ACK: full fsyncs every group commit (survives power loss); normal writes the WAL without fsync (survives a crash or kill -9, like Kea's memfile).";
    };

    dhcp6 = {
      mode = opt (types.enum [ "stateful" "stateless" "off" ]) "off" "stateful: hand out addresses (IA_NA) and answer information requests; stateless: only DNS servers, domain and boot URLs (clients make their own addresses from the RA prefix); off. The RA's M and O flags follow it. Off by default: the RA's prefix (SLAAC) gives LAN hosts their addresses and its RDNSS the DNS server, and a client that sees neither M nor O in the RA (iPXE) boots without a DHCPv6 round.";
      range = opt (types.nullOr (types.addCheck (types.listOf ipv6) (l: builtins.length l == 2))) null "[first, last] IPv6 addresses of the dynamic pool (stateful mode); null means <prefix>::1:0 to <prefix>::1:ffff of lan.address6.";
      preferred_seconds = opt (between 60 31536000) 3600 "Preferred lifetime of an address; clients renew at half of it.";
      valid_seconds = opt (between 60 31536000) 7200 "Valid lifetime of an address (the lease time), at least the preferred lifetime.";
      rapid_commit = opt types.bool true "Answer a SOLICIT that asks for rapid commit with the binding REPLY at once (two messages instead of four).";
      dns_servers = opt (types.nullOr (types.listOf ipv6)) null "DNS servers option (23), also in the RA's RDNSS; null means the router's IPv6 address.";
    };

    ra = {
      enable = opt types.bool true "Send IPv6 router advertisements on the LAN: the lan.address6 prefix (SLAAC), the router as DNS server (RDNSS) and lan.domain (DNSSL); solicitations are answered at once. On by default: iPXE configures IPv4 and IPv6 at once, and without an answer to its router solicitations every boot waits about 12 s for them to time out.";
      interval_seconds = opt (between 4 1800) 600 "Longest time between unsolicited advertisements (MaxRtrAdvInterval); each waits a random time between a third of it and it.";
      router_lifetime_seconds = opt (between 0 9000) 1800 "How long clients use the router as their default IPv6 router; 0 advertises the prefix and DNS without being a default router.";
      prefix_valid_seconds = opt (between 0 4294967295) 86400 "Valid lifetime of the advertised prefix.";
      prefix_preferred_seconds = opt (between 0 4294967295) 14400 "Preferred lifetime of the advertised prefix.";
      mtu = opt (between 0 65535) 0 "MTU option of the advertisements; 0 leaves it out.";
    };

    tftp = {
      listen = opt (types.nullOr listenList) null "Addresses the TFTP server binds (IPv4 or [IPv6]:port); null means the LAN address, port 69, and the LAN IPv6 address when IPv6 runs on the LAN (ra.enable or dhcp6.mode).";
      root = opt optPath null "Directory served read-only; null means state_dir/tftp (populated with the iPXE binaries).";
      ipxe_dir = opt path "/usr/lib/ipxe" "Where the iPXE binaries (undionly.kpxe, ipxe.efi, snponly.efi) come from. The router module sets it to iPXE built by nixpkgs.";
      workers = opt (between 0 64) 0 "Worker processes serving TFTP (all waiting on the listen sockets); 0 means one per two CPUs.";
      busy_poll_us = opt (between 0 10000) 100 "Microseconds a TFTP worker polls without sleeping, while transfers are active, before it sleeps (as Linux's net.core.busy_poll): a lock-step client's next ACK usually comes within it, which saves a wake-up per block; 0 turns it off.";
    };

    boot = {
      http_listen = opt (types.nullOr listen) null "HTTP boot listener: iPXE scripts, kernels, initrds, the binary cache, the agent API (IPv4 or [IPv6]:port); null means the LAN address, port 8081, and the LAN IPv6 address when IPv6 runs on the LAN (ra.enable or dhcp6.mode).";
      public_url = opt optStr null "Base URL clients use to reach http_listen; null derives it from lan.address.";
      menu = opt types.bool true "Show a menu of the host's generations, newest first; the default entry is the current generation (the newest, unless the admin rolled back), marked \"(current)\".";
      menu_timeout_seconds = opt (between 0 3600) 5 "Seconds before the menu's default entry boots; 0 boots the current generation without a menu.";
      cmdline = opt optStr null "Extra kernel parameters for every netbooted host.";
      token_seconds = opt (between 60 2592000) 3600 "How long a per-boot agent token stays valid unused after its boot script is fetched, and after each `installing` report of an install.";
      token_used_seconds = opt (between 10 86400) 120 "How long a per-boot agent token stays valid after the report that ends its boot (booted, installed or failed): time for the agent's retries only.";
      remote = opt types.bool false "Open the HTTP boot port on the WAN and VPN interfaces too (the firewall), for machines beyond the LAN that boot from downloaded media; they must present a media token there. false: only the LAN reaches it.";
      media_url = opt optStr null "Base URL baked into boot media for machines beyond the LAN (a WAN-side or port-forwarded address of the HTTP boot listener); null offers only the LAN and VPN addresses.";
      trusted_networks = opt (types.listOf str) [ ] "Networks besides the LAN whose clients may fetch boot scripts without a media token (segments behind a DHCP relay); everywhere else a script needs a media token.";
    };

    web = {
      listen = opt (types.nullOr listenList) null "Admin web UI and REST API listeners (IPv4 or [IPv6]:port); null means the LAN address, port 8080, and the LAN IPv6 address when IPv6 runs on the LAN (ra.enable or dhcp6.mode).";
      secret_key_file = opt optPath null "File holding the session signing key; null creates state_dir/secret_key.";
      workers = opt (between 0 64) 0 "Web server processes sharing the listeners; 0 means one per CPU (at most 4), 1 serves inside nixie serve.";
      tls = opt types.bool true "Serve the admin UI and API over HTTPS (plain HTTP on the same port is redirected to it); false serves plain HTTP.";
      tls_cert_file = opt optPath null "PEM certificate (chain) the admin UI serves; null uses state_dir/tls/cert.pem, made self-signed at first start (nixie admin cert install replaces it).";
      tls_key_file = opt optPath null "PEM private key of tls_cert_file (set both or neither).";
      hsts_seconds = opt (between 0 63072000) 31536000 "max-age of the Strict-Transport-Security header on HTTPS answers; 0 sends none.";
      max_body_bytes = opt (between 1024 67108864) 1048576 "Largest request body the admin server reads (forms, API calls); a larger one is refused with 413 before it is read.";
      max_import_bytes = opt (between 1024 268435456) 9437184 "Largest request body for a hosts.json import (the Hosts page's upload and POST /api/v1/hosts-json).";
      max_restore_bytes = opt (between 1048576 68719476736) 1073741824 "Largest backup archive the Backup page and POST /api/v1/backup/restore take (the upload is refused with 413 before it is read).";
      idle_timeout_seconds = opt (between 1 3600) 30 "Seconds a connection with no request in flight is kept open.";
      request_timeout_seconds = opt (between 1 3600) 30 "Seconds a request (TLS handshake, headers and body) may take to arrive after its first byte; a slower one is cut off.";
      max_connections = opt (between 16 4096) 256 "Open connections per web server process; a new one beyond it closes the idlest idle one.";
      max_connections_per_client = opt (between 1 4096) 64 "Open connections per client (an IPv4 address, or an IPv6 /64) and web server process; beyond it the client's own idlest connection is closed (or the new one refused).";
    };

    dns = {
      listen = opt (types.nullOr listenList) null "Addresses the DNS server binds (UDP and TCP); null means the LAN address, port 53, and with IPv6 on the LAN (ra.enable or dhcp6.mode) the router's LAN IPv6 address (lan.address6 or the ULA) too.";
      upstream = opt (types.listOf str) [ ] "Resolvers for names outside lan.domain (IP or IP:port); empty means no forwarding.";
      enable = opt types.bool true "Run the DNS server.";
    };

    vpn = {
      address = opt cidr "10.99.0.1/24" "The router's tunnel address with prefix; peers get addresses in this network.";
      enable = opt types.bool false "Run the WireGuard server for remote administration.";
      endpoint = opt optStr null "HOST:PORT peers dial (the router's public address); null derives it from wan.address.";
      interface = opt str "wg-nixie" "Name of the WireGuard interface (unique on the machine).";
      listen_port = opt (between 1 65535) 51820 "UDP port WireGuard listens on.";
    };

    network = {
      confirm_seconds = opt (between 5 3600) 60 "How long a network change waits for confirmation before it rolls back by itself.";
      manage = opt types.bool false "Set up the interfaces (LAN bridge and address, WAN static or DHCP client, routes) from this file and the confirmed UI changes when serve starts.";
    };

    firewall = {
      enable = opt types.bool false "Apply the generated nftables ruleset when serve starts and with every network change (the NixOS router module turns it on).";
      ssh_port = opt (between 1 65535) 22 "SSH port the firewall opens to the LAN and the VPN.";
    };

    builder = {
      kind = opt (types.enum [ "local" "remote" ]) "local" "local: this router builds; remote: an SSH Nix builder.";
      uri = opt optStr null "Remote store URI, e.g. ssh-ng://nix@builder (kind remote).";
      ssh_key = opt optPath null "SSH private key for the remote builder.";
      systems = opt listOfStr [ "x86_64-linux" ] "Systems the builder builds.";
      max_jobs = opt (between 1 256) 1 "Builds run at once.";
      substituters = opt listOfStr [ ] "Extra binary caches.";
      trusted_public_keys = opt listOfStr [ ] "Keys of the extra binary caches.";
      flake_refresh_seconds = opt (between 0 604800) 900 "How often the build worker evaluates every flake again; 0 never.";
      host_key = opt optStr null "The remote builder's SSH host public key (e.g. \"ssh-ed25519 AAAA...\"); null uses the system's known_hosts.";
      keep_generations = opt (between 1 1000) 10 "Generations kept per host (rows and GC roots); older ones are dropped.";
      flake_policy = opt (types.enum [ "on_change" "manual" ]) "on_change" "What a newly added flake does by itself (each flake can be switched): on_change binds the hosts its configurations declare (nixie.netboot.macs) and builds every bound host whose system changed; manual: neither, the admin binds and builds.";
      flake_check_seconds = opt (between 0 86400) 60 "How often the build worker checks each on_change flake's locked revision (nix flake metadata) and evaluates it again when it moved; 0 never (webhooks still do).";
    };

    netboot = {
      cache_max_bytes = opt (between 1048576 1125899906842624) 21474836480 "Size limit of state_dir/cpio-cache (per-store-path archives); least recently used go first.";
      hydra_urls = opt listOfStr [ ] "Hydra instances the `hydra` boot dispatch may ask (base URLs); empty disables it.";
      wait_seconds = opt (between 0 3600) 20 "How long an initrd request waits for missing archives before answering 'retry later'.";
      workers = opt (between 0 256) 0 "Threads compressing archives; 0 means one per CPU.";
      zstd_level = opt (between 1 19) 1 "zstd level of the per-store-path archives (1 is several times faster than 3 for nearly the same size).";
    };

    nix = {
      bin_dir = opt optPath null "Directory holding nix, nix-store, nix-build; null uses PATH.";
      store = opt optStr null "Nix store URI to use instead of the default (tests use a chroot store).";
      extra_config = opt types.str "" "Text appended to NIX_CONFIG for every nix call.";
      cache_key_file = opt optPath null "The Nix secret key file the binary cache at /nix-cache signs with (the NixOS module sets the key its Nix daemon signs builds with); null makes one in state_dir/binary-cache.";
    };

    retention = {
      event_days = opt (between 1 3650) 90 "Events older than this many days are deleted (checked every few minutes).";
      event_rows = opt (between 1000 100000000) 200000 "At most this many events are kept; the oldest go first.";
      anonymous_events_per_minute = opt (between 1 100000) 30 "Events one client (address, or MAC for DHCP) may cause per kind and minute without logging in: boot scripts and transfers, DHCP, rejected agent reports, failed logins. Over it they are counted and summarised in one events.suppressed event; one kind from all clients together gets 20 times this.";
    };
    gc = {
      interval_seconds = opt (between 0 2592000) 86400 "How often nixie serve deletes the Nix store paths of generations the router dropped (beyond builder.keep_generations, or with their host) that nothing else keeps; 0 never (nixie gc, the Backup page and POST /api/v1/gc still do).";
      disk_warn_percent = opt (between 1 100) 90 "Disk use (of the filesystems holding state_dir and the Nix store) from which nixie status, /healthz and the dashboard warn.";
    };
    bmc = {
      poll_seconds = opt (between 0 86400) 60 "How often nixie serve asks every host's BMC for its power state (shown on the host list and dashboard); 0 never.";
    };
    metrics = {
      enable = opt types.bool true "Serve Prometheus metrics at /metrics on the admin web listener.";
      token_file = opt optPath null "File holding the bearer token a scraper must send (Authorization: Bearer ...); null asks for none.";
      allow = opt listOfStr [ ] "Networks allowed to scrape /metrics besides loopback, the LAN and the VPN network; anyone else gets 403.";
    };
  };

  isOption = v: builtins.isAttrs v && (v._type or null) == "option";

  # The JSON document from evaluated settings: exactly the keys of the option
  # tree, nothing the module system adds around them.
  toConfig = tree: values:
    builtins.mapAttrs
      (name: node: if isOption node then values.${name} else toConfig node values.${name})
      tree;
in
{
  inherit options isOption;
  toConfig = toConfig options;
}
