# Evaluates the `config` half of one of the repository's NixOS modules with
# stub-lib.nix and stub-pkgs.nix, and returns it with mkIf resolved (false
# branches dropped) and packages shown as their store paths.
#
# `config` (what the module reads back) is built like the module system
# would: option defaults of the module itself, the module's own settings
# definitions (mkDefault), then `extra` over them. This forces every
# expression of the module's config with the real Nix evaluator; that the
# option *names* it sets exist in NixOS is only checked on NixOS.
{ module, system ? "x86_64-linux", extra ? { }, inspect ? (_: null), inspectConfig ? (_: null) }:
let
  lib = import ./stub-lib.nix // {
    getExe = p: "${p}/bin/${p.meta.mainProgram}";
    escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString s) + "'";
    makeBinPath = ps: builtins.concatStringsSep ":" (map (p: "${p}/bin") ps);
  };
  pkgs = import ./stub-pkgs.nix system;

  isOption = v: builtins.isAttrs v && (v._type or null) == "option";
  defaultsOf = tree: builtins.mapAttrs
    (_: n: if isOption n then (n.default or null) else if builtins.isAttrs n then defaultsOf n else n) tree;
  update = a: b: a // builtins.mapAttrs
    (name: v: if builtins.isAttrs v && builtins.isAttrs (a.${name} or null) && !(v ? outPath) then update a.${name} v else v) b;

  resolve = v:
    if builtins.isAttrs v then
      if (v._type or null) == "if" then (if v.condition then resolve v.content else null)
      else if v ? outPath then toString v
      else builtins.listToAttrs (builtins.concatMap
        (n: let r = resolve v.${n}; in if r == null && (v.${n}._type or null) == "if" then [ ] else [ { name = n; value = r; } ])
        (builtins.attrNames v))
    else if builtins.isList v then map resolve v
    else if builtins.isFunction v then "<function>"
    else v;

  base = {
    networking.hostName = "router";
    nix.package = pkgs.nix;
    nix.settings.trusted-public-keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
    ids.gids.nixbld = 30;
    boot.initrd.systemd.enable = false;
    services.dnsmasq.enable = false;
    services.openssh.ports = [ 2222 ];
    system.build.nixos-install = pkgs.nix // { name = "nixos-install"; outPath = "/nix/store/stub-nixos-install"; };
  };

  m = import module { inherit config lib pkgs; modulesPath = ./stub-nixos/modules; };
  # a module is { options; config; imports } or, without options, its config itself
  body = if m ? config || m ? options then m.config or { } else builtins.removeAttrs m [ "imports" ];
  ownSettings = (body.content or body).services.nixie.settings or { };
  config = update (update (defaultsOf (m.options or { })) base) (update { services.nixie.settings = ownSettings; } extra);
in
{
  config = resolve body;
  # a value under the config before resolving, e.g. a writeText's text
  inspected = resolve (inspect (body.content or body));
  # a value of the whole configuration, e.g. an option default the module set
  inspectedConfig = resolve (inspectConfig config);
  imports = map toString (m.imports or [ ]);
  hasOptions = m ? options;
}
