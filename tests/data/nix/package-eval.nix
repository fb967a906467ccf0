# Evaluates nixos-image/package.nix with a stand-in python3Packages whose
# buildPythonApplication returns its arguments, so a test reads the package's
# name, version, dependencies and build settings.
{ root }:
let
  names = [
    "flask" "flask-wtf" "wtforms" "pyroute2" "dnslib" "tftpy" "waitress" "sqlite-utils" "zstandard"
    "argon2-cffi" "qrcode" "requests" "cryptography" "prometheus-client" "setuptools" "wheel"
  ];
  python3Packages = builtins.listToAttrs (map (n: { name = n; value = { pname = n; }; }) names) // {
    buildPythonApplication = args: args;
  };
  lib = import ./stub-lib.nix // {
    fileset = {
      toSource = { root, fileset }: { root = toString root; files = fileset; };
      unions = map toString;
    };
    licenses.mit = "mit";
    platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
  };
  pkg = import (root + "/nixos-image/package.nix") { inherit lib python3Packages; };
in
pkg // {
  dependencies = map (p: p.pname) pkg.dependencies;
  build-system = map (p: p.pname) pkg.build-system;
}
