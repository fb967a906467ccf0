# The appliance (`nixie`), built from pyproject.toml with nixpkgs' Python packages.
{ lib, python3Packages }:
let
  pyproject = builtins.fromTOML (builtins.readFile ../pyproject.toml);
in
python3Packages.buildPythonApplication {
  pname = "nixie-router";
  inherit (pyproject.project) version;
  pyproject = true;

  # only what the wheel is made of, so editing tests or docs does not rebuild it
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      ../README.md
      ../appliance
      ../netservices
      ../webui
    ];
  };

  build-system = with python3Packages; [ setuptools wheel ];

  dependencies = with python3Packages; [
    flask
    flask-wtf
    wtforms
    pyroute2
    dnslib
    tftpy
    waitress
    sqlite-utils
    zstandard
    argon2-cffi
    qrcode
    requests
    cryptography
    prometheus-client
  ];

  # pyproject.toml bounds versions for PyPI installs; nixpkgs pins its own set
  pythonRelaxDeps = true;

  # the test suite needs root, network namespaces and QEMU: it runs in the VM
  # test (checks.<system>.vm-test) and in the repository's CI, not here
  doCheck = false;
  pythonImportsCheck = [ "appliance" "appliance.cli.main" "netservices" "webui" ];

  meta = {
    description = "On-premises router appliance that PXE-boots bare metal into NixOS";
    license = lib.licenses.mit;
    mainProgram = "nixie";
    platforms = lib.platforms.linux;
  };
}
