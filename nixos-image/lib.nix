# Pure helpers of the router module: builtins only, no nixpkgs, so
# tests/unit/test_nixos_lib.py evaluates them with the real Nix evaluator.
let
  toInt = s: builtins.fromJSON s; # decimal digits only, checked by the callers' patterns

  # "10.0.0.1/24" -> { address = "10.0.0.1"; prefixLength = 24; }
  splitCidr = cidr:
    let m = builtins.match "([0-9.]+)/([0-9]+)" cidr;
    in if m == null then throw "nixie: ${cidr} is not ADDRESS/PREFIX"
       else { address = builtins.elemAt m 0; prefixLength = toInt (builtins.elemAt m 1); };

  # "0.0.0.0:8080" or "[::]:53" -> 8080 / 53
  portOf = listen:
    let m = builtins.match ".*:([0-9]+)" listen;
    in if m == null then throw "nixie: ${listen} is not HOST:PORT" else toInt (builtins.head m);

  asList = v: if builtins.isList v then v else [ v ];
  # the ports of a listen setting; null (the LAN address) listens on `default`
  portsOf = default: v: if v == null then [ default ] else map portOf (asList v);
  unique = l: builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ] l;
  sort = l: builtins.sort builtins.lessThan l;

  # The ports of the services, from the settings: what NixOS's firewall opens.
  servicePorts = s: {
    dhcp = if s.dhcp.mode == "authoritative" then [ 67 ]
           else if s.dhcp.mode == "proxy" then [ 67 4011 ] else [ ];
    tftp = portsOf 69 s.tftp.listen;
    dns = if s.dns.enable then portsOf 53 s.dns.listen else [ ];
    web = portsOf 8080 s.web.listen;
    http = portsOf 8081 s.boot.http_listen;
  };

  # The LAN gets every boot service, DNS and the web UI.
  lanPorts = s:
    let p = servicePorts s;
    in {
      udp = sort (unique (p.dhcp ++ p.tftp ++ p.dns));
      tcp = sort (unique (p.dns ++ p.web ++ p.http));
    };

  # WireGuard peers get DNS and the web UI, never the boot services (the same
  # split as the appliance's own ruleset, appliance/router/firewall.py).
  vpnPorts = s:
    let p = servicePorts s;
    in {
      udp = sort (unique p.dns);
      tcp = sort (unique (p.dns ++ p.web));
    };

  # builder.uri "ssh-ng://nix@builder" -> an entry of nix.buildMachines, or null
  # when the router builds itself (or the uri is missing: the module's
  # assertion reports that).
  buildMachineOf = b:
    let
      m = if b.uri == null then null else builtins.match "(ssh|ssh-ng)://(([^@/]+)@)?([^/?]+).*" b.uri;
    in
    if b.kind != "remote" || b.uri == null then null
    else if m == null then throw "nixie: builder.uri ${b.uri} is not ssh://[user@]host or ssh-ng://[user@]host"
    else {
      protocol = builtins.elemAt m 0;
      sshUser = builtins.elemAt m 2;
      hostName = builtins.elemAt m 3;
      sshKey = b.ssh_key;
      systems = b.systems;
      maxJobs = b.max_jobs;
      supportedFeatures = [ "big-parallel" ];
    };
in
{
  inherit splitCidr portOf lanPorts vpnPorts buildMachineOf;
}
