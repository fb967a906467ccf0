{
  description = "Nixie lab: NixOS-shaped systems built with busybox, without nixpkgs";

  outputs = { self }:
    let
      lab = import ./lab.nix { src = self; };
    in
    {
      nixosConfigurations = {
        demo = lab.nixosSystem {
          hostName = "demo";
          macs = [ "52:54:00:5e:00:01" ];
        };
        demo2 = lab.nixosSystem {
          hostName = "demo2";
          macs = [ "52:54:00:5e:00:02" ];
        };
      };
    };
}
