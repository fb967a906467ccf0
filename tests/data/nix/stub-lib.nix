# A stand-in for the few parts of nixpkgs' `lib` that nixos-image/settings.nix
# and the hw/ profiles use, for tests that evaluate them without nixpkgs.
#
# mkOption returns its arguments tagged as an option; each type carries a
# `check` that follows the semantics of the nixpkgs type of the same name
# (what values it accepts), and the data describing it (name, bounds, choices,
# pattern, element type). Priorities (mkDefault, mkForce) are dropped: the
# tests read one module at a time.
let
  mkType = name: check: extra: { _type = "option-type"; inherit name check; } // extra;

  types = {
    str = mkType "str" builtins.isString { };
    nonEmptyStr = mkType "nonEmptyStr" (v: builtins.isString v && builtins.match "[ \t\n]*" v == null) { };
    bool = mkType "bool" builtins.isBool { };
    int = mkType "int" builtins.isInt { };
    package = mkType "package" (v: builtins.isAttrs v && v ? outPath) { };
    path = mkType "path" (v: builtins.isPath v || (builtins.isString v && builtins.substring 0 1 v == "/")) { };
    port = mkType "port" (v: builtins.isInt v && v >= 0 && v <= 65535) { };
    ints = {
      between = lo: hi: mkType "intBetween" (v: builtins.isInt v && v >= lo && v <= hi) { inherit lo hi; };
      positive = mkType "positiveInt" (v: builtins.isInt v && v > 0) { };
      unsigned = mkType "unsignedInt" (v: builtins.isInt v && v >= 0) { };
    };
    enum = values: mkType "enum" (v: builtins.elem v values) { inherit values; };
    strMatching = pattern: mkType "strMatching" (v: builtins.isString v && builtins.match pattern v != null) { inherit pattern; };
    nullOr = elem: mkType "nullOr" (v: v == null || elem.check v) { inherit elem; };
    listOf = elem: mkType "listOf" (v: builtins.isList v && builtins.all elem.check v) { inherit elem; };
    attrsOf = elem: mkType "attrsOf" (v: builtins.isAttrs v && builtins.all elem.check (builtins.attrValues v)) { inherit elem; };
    addCheck = t: f: t // { check = v: t.check v && f v; extraCheck = true; };
    coercedTo = from: coerce: to: mkType "coercedTo" (v: to.check v || (from.check v && to.check (coerce v))) { inherit from to; };
  };
  mkOption = args: args // { _type = "option"; };
in
{
  inherit types mkOption;
  mkEnableOption = name: mkOption { type = types.bool; default = false; description = "Whether to enable ${name}."; };
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  mkDefault = v: v;
  mkForce = v: v;
  mkOverride = _: v: v;
  mkIf = condition: content: { _type = "if"; inherit condition content; };

  # what flake.nix uses from nixpkgs.lib, with the semantics of nixpkgs' lib
  genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
  filterAttrs = pred: set: builtins.listToAttrs (builtins.concatMap
    (n: if pred n set.${n} then [ { name = n; value = set.${n}; } ] else [ ]) (builtins.attrNames set));
  mapAttrs = builtins.mapAttrs;
  mapAttrs' = f: set: builtins.listToAttrs (map (n: f n set.${n}) (builtins.attrNames set));
  nameValuePair = name: value: { inherit name value; };
  listToAttrs = builtins.listToAttrs;
  attrNames = builtins.attrNames;
  optionalAttrs = cond: set: if cond then set else { };
  optional = cond: x: if cond then [ x ] else [ ];
  optionalString = cond: s: if cond then s else "";
  concatStringsSep = builtins.concatStringsSep;
  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
  concatMapStringsSep = sep: f: l: builtins.concatStringsSep sep (map f l);
}
