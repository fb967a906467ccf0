# nixie-agent: the POSIX sh reporter, with curl and the tools it calls on PATH.
{ lib, stdenvNoCC, makeWrapper, runtimeShell, curl, coreutils, gnused, gawk }:
stdenvNoCC.mkDerivation {
  pname = "nixie-agent";
  version = "0.1.0";
  src = ./nixie-agent;
  dontUnpack = true;
  nativeBuildInputs = [ makeWrapper ];
  installPhase = ''
    runHook preInstall
    install -Dm755 $src $out/bin/nixie-agent
    sed -i "1s|.*|#!${runtimeShell}|" $out/bin/nixie-agent
    wrapProgram $out/bin/nixie-agent \
      --prefix PATH : ${lib.makeBinPath [ curl coreutils gnused gawk ]}
    runHook postInstall
  '';
  meta = {
    description = "Reports a machine's boot and install state to the Nixie router";
    license = lib.licenses.mit;
    mainProgram = "nixie-agent";
    platforms = lib.platforms.linux;
  };
}
