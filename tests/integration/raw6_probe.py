# raw6_probe.py NAME PROBE...: a hostile guest's raw IPv6 frames, for
# tests/integration/net_policy_test.cc (runs in the Debian test image).
# Each PROBE is ADDRESS,PROTO,PORT (tcp or udp). The frames go straight onto
# eth0 (AF_PACKET), so the address is on the wire exactly as written, even
# the forms the guest kernel would rewrite (::ffff:a.b.c.d). Looking NAME up
# first makes the kernel learn the gateway's MAC. Prints "rst ADDRESS PORT"
# for each TCP probe the stack answered with a reset, then "probe-done".
import select
import socket
import struct
import sys
import time

GATEWAY4 = "10.0.2.2"
RTMGRP_NEIGH = 4  # <linux/rtnetlink.h>: neighbour table changes


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def mac(text):
    return bytes(int(x, 16) for x in text.split(":"))


def guest6():
    for line in open("/proc/net/if_inet6"):
        f = line.split()
        if f[5] == "eth0" and f[3] == "00":  # global scope
            return bytes.fromhex(f[0])
    sys.exit("no global IPv6 address on eth0")


def gateway_mac(name):
    # The kernel announces every change to its neighbour table on this
    # socket: subscribed before the lookup that makes it ask for the
    # gateway's MAC, so the change that fills the entry wakes the wait below.
    events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    events.bind((0, RTMGRP_NEIGH))
    socket.getaddrinfo(name, 80, socket.AF_INET)
    deadline = time.time() + 10
    while True:
        for line in open("/proc/net/arp").read().splitlines()[1:]:
            f = line.split()
            if f[0] == GATEWAY4 and f[3] != "00:00:00:00:00:00":
                return mac(f[3])
        left = deadline - time.time()
        if left <= 0 or not select.select([events], [], [], left)[0]:
            sys.exit("the gateway's MAC did not appear in /proc/net/arp")
        events.recv(65536)


def frame(dst_mac, src_mac, src, dst, proto, sport, dport):
    if proto == "tcp":
        nh = 6
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
    else:
        nh = 17
        payload = b"probe"
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    pseudo = src + dst + struct.pack("!I3xB", len(l4), nh)
    c = checksum(pseudo + l4)
    off = 16 if proto == "tcp" else 6
    l4 = l4[:off] + struct.pack("!H", c) + l4[off + 2:]
    ip = struct.pack("!IHBB", 6 << 28, len(l4), nh, 64) + src + dst
    return dst_mac + src_mac + b"\x86\xdd" + ip + l4


def main():
    name, probes = sys.argv[1], [p.split(",") for p in sys.argv[2:]]
    src_mac = mac(open("/sys/class/net/eth0/address").read().strip())
    dst_mac = gateway_mac(name)
    src = guest6()
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
    rx.bind(("eth0", 0))
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind(("eth0", 0))
    waiting = {}
    for i, (addr, proto, port) in enumerate(probes):
        dst = socket.inet_pton(socket.AF_INET6, addr)
        sport = 42000 + i
        tx.send(frame(dst_mac, src_mac, src, dst, proto, sport, int(port)))
        if proto == "tcp":
            waiting[(dst, sport)] = (addr, port)
    deadline = time.time() + 10
    while waiting and time.time() < deadline:
        if not select.select([rx], [], [], max(0, deadline - time.time()))[0]:
            break
        data = rx.recv(65536)
        if len(data) < 14 + 40 + 20 or data[14 + 6] != 6:
            continue
        peer, tcp = data[14 + 8:14 + 24], data[14 + 40:]
        dport = struct.unpack("!H", tcp[2:4])[0]
        if tcp[13] & 0x04 and (peer, dport) in waiting:
            addr, port = waiting.pop((peer, dport))
            print("rst %s %s" % (addr, port), flush=True)
    print("probe-done", flush=True)


main()
