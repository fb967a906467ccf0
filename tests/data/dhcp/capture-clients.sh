# How dhclient.pcap and udhcpc.pcap were captured (run as root, from /tmp/cap3):
# dnsmasq answers in one namespace, the real client runs in another, tcpdump
# records the exchange. The VM captures (ovmf-*.pcap, ipxe-bios-proxy.pcap) are
# the lan.pcap files tests/vm/test_dhcp_pxe.py records on the LAN bridge.
set -x
S=nxcap3s; C=nxcap3c
ip netns add $S; ip netns add $C
ip link add vcap3a type veth peer name vcap3b
ip link set vcap3a netns $S; ip link set vcap3b netns $C
ip -n $S addr add 10.9.0.1/24 dev vcap3a; ip -n $S link set vcap3a up; ip -n $S link set lo up
ip -n $C link set vcap3b up; ip -n $C link set lo up
ip netns exec $S dnsmasq --no-daemon --port=0 --dhcp-range=10.9.0.100,10.9.0.150,2m --interface=vcap3a --bind-interfaces --dhcp-leasefile=/tmp/cap3/dnsmasq.leases --no-ping --conf-file=/dev/null --pid-file= > /tmp/cap3/dnsmasq.log 2>&1 &
DP=$!
sleep 1
ip netns exec $S tcpdump -i vcap3a -w /tmp/cap3/dhclient.pcap -U udp port 67 or udp port 68 2>/dev/null &
TP=$!
sleep 1
printf '#!/bin/sh\necho "$reason $new_ip_address" >> /tmp/cap3/dhclient.out\n' > /tmp/cap3/script.sh; chmod +x /tmp/cap3/script.sh
ip netns exec $C timeout 20 dhclient -1 -v -sf /tmp/cap3/script.sh -lf /tmp/cap3/dhclient.leases -pf /tmp/cap3/dhclient.pid -cf /tmp/cap3/dhclient.conf vcap3b
ip netns exec $C timeout 20 dhclient -1 -v -sf /tmp/cap3/script.sh -lf /tmp/cap3/dhclient.leases -pf /tmp/cap3/dhclient.pid -cf /tmp/cap3/dhclient.conf vcap3b
ip netns exec $C timeout 10 dhclient -r -v -sf /tmp/cap3/script.sh -lf /tmp/cap3/dhclient.leases -pf /tmp/cap3/dhclient.pid vcap3b
sleep 1; kill $TP; sleep 0.5
ip netns exec $S tcpdump -i vcap3a -w /tmp/cap3/udhcpc.pcap -U udp port 67 or udp port 68 2>/dev/null &
TP=$!
sleep 1
printf '#!/bin/sh\necho "$1 $ip" >> /tmp/cap3/udhcpc.out\n' > /tmp/cap3/uscript.sh; chmod +x /tmp/cap3/uscript.sh
ip netns exec $C timeout 20 udhcpc -i vcap3b -n -q -f -s /tmp/cap3/uscript.sh -x hostname:capudhcpc -R
sleep 1; kill $TP; kill $DP
sleep 0.5
ip netns del $S; ip netns del $C
