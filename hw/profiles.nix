# The hardware profiles the flake builds images for: name -> system, the
# profile module, and the partition table of its raw disk image ("efi": GPT
# with an ESP and systemd-boot; "legacy": MBR with GRUB for BIOS firmware).
# Pure data, read by flake.nix and by tests/unit/test_hw_profiles.py.
{
  generic-x86_64 = { system = "x86_64-linux"; module = ./generic-x86_64.nix; partitionTable = "efi"; };
  apu2 = { system = "x86_64-linux"; module = ./apu2.nix; partitionTable = "legacy"; };
  n100 = { system = "x86_64-linux"; module = ./n100.nix; partitionTable = "efi"; };
  qemu-x86_64 = { system = "x86_64-linux"; module = ./qemu.nix; partitionTable = "efi"; };
  qemu-aarch64 = { system = "aarch64-linux"; module = ./qemu.nix; partitionTable = "efi"; };
}
