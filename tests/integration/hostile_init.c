/* Guest PID 1 stand-ins for fault tests. Built four times:
 *  -DSILENT:   prints a console line and never talks to the host (boot timeout);
 *  -DEVIL:     opens the agent port and sends a frame header declaring a payload
 *              far over the 1 MiB bound, then floods garbage;
 *  -DFLOOD:    completes the agent handshake, then sends kFloodFrames one-byte
 *              workload stdout frames without reading the port, says so on the
 *              console, and only then reads (powering off on kShutdown);
 *  -DNETFLOOD: completes the handshake, then opens kNetFlows TCP connections
 *              to the gateway's DNS port from raw Ethernet frames, each with a
 *              zero window and one query, and reports on the console how many
 *              the host accepted (SYN-ACK) and refused (RST). */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <unistd.h>
#if defined(NETFLOOD)
#include <linux/if_packet.h>
#include <net/ethernet.h>
#endif

static void console(const char* msg) {
  int fd = open("/dev/console", O_WRONLY);
  if (fd >= 0) {
    (void)!write(fd, msg, strlen(msg));
    close(fd);
  }
}

static int open_agent_port(void) {
  char path[512];
  DIR* d = opendir("/sys/class/virtio-ports");
  struct dirent* e;
  int port = -1;
  while (d != NULL && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char name[64] = {0};
    snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) continue;
    (void)!read(fd, name, sizeof name - 1);
    close(fd);
    if (strncmp(name, "msb.agent", 9) == 0) {
      snprintf(path, sizeof path, "/dev/%s", e->d_name);
      port = open(path, O_RDWR);
    }
  }
  return port;
}

#if defined(FLOOD) || defined(NETFLOOD)
static void put32(unsigned char* p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

static void send_frame(int port, uint32_t id, unsigned kind, const char* payload) {
  unsigned char buf[256];
  size_t n = strlen(payload);
  put32(buf, (uint32_t)n);
  put32(buf + 4, id);
  buf[8] = (unsigned char)kind;
  memcpy(buf + 9, payload, n);
  (void)!write(port, buf, 9 + n);
}

static int read_full(int fd, unsigned char* p, size_t n) {
  while (n > 0) {
    ssize_t got = read(fd, p, n);
    if (got <= 0) return -1;
    p += got;
    n -= (size_t)got;
  }
  return 0;
}

/* Reads one frame; its payload (NUL-terminated, at most cap-1 bytes kept)
 * into out. Returns the kind, or -1. */
static int read_frame(int port, char* out, size_t cap) {
  unsigned char hdr[9];
  if (read_full(port, hdr, 9) != 0) return -1;
  uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
  out[0] = 0;
  size_t kept = 0;
  while (len > 0) {
    char c;
    if (read_full(port, (unsigned char*)&c, 1) != 0) return -1;
    if (kept + 1 < cap) out[kept++] = c;
    --len;
  }
  out[kept] = 0;
  return hdr[8];
}

/* kHello, wait for kBoot (its payload into boot), kReady. */
static int handshake(int port, char* boot, size_t cap) {
  send_frame(port, 0, 1, "{\"version\":1}");
  for (;;) {
    int kind = read_frame(port, boot, cap);
    if (kind < 0) return -1;
    if (kind == 2) break;
  }
  send_frame(port, 0, 3, "{}");
  return 0;
}

/* After the attack: answer nothing, power off when asked. */
static void serve_shutdown(int port) {
  static char payload[4096];
  for (;;) {
    int kind = read_frame(port, payload, sizeof payload);
    if (kind < 0 || kind == 48) {
      sync();
      reboot(RB_POWER_OFF);
    }
  }
}
#endif

#if defined(NETFLOOD)
enum { kNetFlows = 8192 };

/* The string value of "key":"..." in a JSON text (no escapes expected). */
static int json_string(const char* json, const char* key, char* out, size_t cap) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":\"", key);
  const char* p = strstr(json, pat);
  if (p == NULL) return -1;
  p += strlen(pat);
  size_t n = 0;
  while (p[n] != '"' && p[n] != 0 && n + 1 < cap) {
    out[n] = p[n];
    ++n;
  }
  out[n] = 0;
  return 0;
}

static uint32_t sum16(uint32_t sum, const unsigned char* p, size_t n) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)p[i] << 8 | p[i + 1];
  if (n & 1) sum += (uint32_t)p[n - 1] << 8;
  return sum;
}

static uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

struct link {
  int fd;
  unsigned char mac[6];
  uint32_t ip, gw; /* network order */
};

/* One TCP segment from ip:sport to gw:53 with a zero window. */
static void send_tcp(struct link* l, uint16_t sport, uint32_t seq, uint32_t ack, uint8_t flags,
                     const unsigned char* data, size_t len) {
  unsigned char f[14 + 20 + 20 + 128];
  memset(f, 0, sizeof f);
  memset(f, 0xff, 6); /* the gateway answers whatever the destination MAC */
  memcpy(f + 6, l->mac, 6);
  f[12] = 0x08;
  unsigned char* ip = f + 14;
  ip[0] = 0x45;
  uint16_t total = (uint16_t)(40 + len);
  ip[2] = (unsigned char)(total >> 8);
  ip[3] = (unsigned char)total;
  ip[8] = 64;
  ip[9] = 6;
  memcpy(ip + 12, &l->ip, 4);
  memcpy(ip + 16, &l->gw, 4);
  uint16_t c = fold(sum16(0, ip, 20));
  ip[10] = (unsigned char)(c >> 8);
  ip[11] = (unsigned char)c;
  unsigned char* t = ip + 20;
  t[0] = (unsigned char)(sport >> 8);
  t[1] = (unsigned char)sport;
  t[3] = 53;
  put32(t + 4, seq);
  put32(t + 8, ack);
  t[12] = 5 << 4;
  t[13] = flags;
  /* window 0: the guest takes nothing */
  memcpy(t + 20, data, len);
  uint32_t s = sum16(0, ip + 12, 8);
  s += 6 + 20 + (uint32_t)len;
  c = fold(sum16(s, t, 20 + len));
  t[16] = (unsigned char)(c >> 8);
  t[17] = (unsigned char)c;
  (void)!send(l->fd, f, 14 + 40 + len, 0);
}

/* The gateway's answer to a SYN from a port in [base, base + n): 1 SYN-ACK
 * (*port and *seq set), 0 RST (*port set), -1 nothing within a second. */
static int next_answer(struct link* l, uint16_t base, int n, uint16_t* port, uint32_t* seq) {
  unsigned char f[2048];
  for (;;) {
    struct pollfd p = {l->fd, POLLIN, 0};
    if (poll(&p, 1, 1000) <= 0) return -1;
    ssize_t got = recv(l->fd, f, sizeof f, 0);
    if (got < 14 + 40 || f[12] != 0x08 || f[13] != 0x00) continue;
    unsigned char* ip = f + 14;
    size_t ihl = (size_t)(ip[0] & 15) * 4;
    if (ip[9] != 6) continue;
    unsigned char* t = ip + ihl;
    uint16_t dport = (uint16_t)(t[2] << 8 | t[3]);
    if ((t[0] << 8 | t[1]) != 53 || dport < base || dport >= base + n) continue;
    *port = dport;
    if (t[13] & 0x04) return 0;
    if ((t[13] & 0x12) == 0x12) {
      *seq = (uint32_t)t[4] << 24 | (uint32_t)t[5] << 16 | (uint32_t)t[6] << 8 | t[7];
      return 1;
    }
  }
}

static void net_flood(const char* boot) {
  char mac[32], ip[32], gw[32];
  if (json_string(boot, "mac", mac, sizeof mac) || json_string(boot, "ipv4", ip, sizeof ip) ||
      json_string(boot, "gateway4", gw, sizeof gw)) {
    console("netflood-init: no network in the boot message\n");
    return;
  }
  struct link l;
  unsigned m[6];
  sscanf(mac, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]);
  for (int i = 0; i < 6; ++i) l.mac[i] = (unsigned char)m[i];
  inet_pton(AF_INET, ip, &l.ip);
  inet_pton(AF_INET, gw, &l.gw);
  /* The first interface but lo, up, with no address: the kernel ignores the
   * gateway's segments, only the packet socket sees them. */
  char ifname[IFNAMSIZ] = {0};
  DIR* d = opendir("/sys/class/net");
  struct dirent* e;
  while (d != NULL && (e = readdir(d)) != NULL) {
    if (e->d_name[0] != '.' && strcmp(e->d_name, "lo") != 0) snprintf(ifname, sizeof ifname, "%.15s", e->d_name);
  }
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
  ioctl(s, SIOCGIFFLAGS, &ifr);
  ifr.ifr_flags |= IFF_UP;
  ioctl(s, SIOCSIFFLAGS, &ifr);
  l.fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
  struct sockaddr_ll sll;
  memset(&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_IP);
  sll.sll_ifindex = (int)if_nametoindex(ifname);
  if (l.fd < 0 || bind(l.fd, (struct sockaddr*)&sll, sizeof sll) != 0) {
    console("netflood-init: no packet socket\n");
    return;
  }
  /* A query for msb-flood.invalid/A, length-prefixed. */
  static const unsigned char query[] = {0, 35, 0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0,
                                        9, 'm', 's', 'b', '-', 'f', 'l', 'o', 'o', 'd',
                                        7, 'i', 'n', 'v', 'a', 'l', 'i', 'd', 0, 0, 1, 0, 1};
  /* Room for the window probes of the flows already open. */
  int rcvbuf = 8 << 20;
  setsockopt(l.fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
  /* SYNs in batches; each batch's answers before the next. */
  enum { kBatch = 128 };
  int accepted = 0, refused = 0, silent = 0;
  for (int first = 0; first < kNetFlows; first += kBatch) {
    int n = kNetFlows - first < kBatch ? kNetFlows - first : kBatch;
    uint16_t base = (uint16_t)(20000 + first);
    unsigned char answered[kBatch] = {0};
    for (int i = 0; i < n; ++i) send_tcp(&l, (uint16_t)(base + i), 1000u * (uint32_t)(first + i), 0, 0x02, NULL, 0);
    int pending = n;
    while (pending > 0) {
      uint16_t port = 0;
      uint32_t their = 0;
      int a = next_answer(&l, base, n, &port, &their);
      if (a < 0) break;
      if (answered[port - base]) continue;
      answered[port - base] = 1;
      --pending;
      if (a == 1) {
        ++accepted;
        send_tcp(&l, port, 1000u * (uint32_t)(first + port - base) + 1, their + 1, 0x18, query, sizeof query);
      } else {
        ++refused;
      }
    }
    silent += pending;
    if (pending == n) break; /* the gateway is not answering at all: report, do not hang */
  }
  char msg[160];
  snprintf(msg, sizeof msg, "netflood-init: %d flows accepted, %d refused, %d unanswered\n", accepted,
           refused, silent);
  console(msg);
}
#endif

int main(void) {
  mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
  mount("sysfs", "/sys", "sysfs", 0, NULL);
#ifdef SILENT
  console("silent-init: waiting forever\n");
  for (;;) pause();
#elif defined(EVIL)
  int port = open_agent_port();
  console("evil-init: sending an oversized frame\n");
  unsigned char hdr[9] = {0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 2, 19};
  (void)!write(port, hdr, sizeof hdr);
  char junk[4096];
  memset(junk, 'A', sizeof junk);
  for (;;) (void)!write(port, junk, sizeof junk);
#elif defined(FLOOD)
  enum { kFloodFrames = 10000000, kPerWrite = 4096 };
  static char boot[1 << 16];
  int port = open_agent_port();
  if (handshake(port, boot, sizeof boot) != 0) return 1;
  console("flood-init: flooding\n");
  /* One-byte stdout frames of the workload (id 1, kStdout 19), never reading. */
  static unsigned char batch[kPerWrite * 10];
  for (int i = 0; i < kPerWrite; ++i) {
    unsigned char* f = batch + i * 10;
    put32(f, 1);
    put32(f + 4, 1);
    f[8] = 19;
    f[9] = 'x';
  }
  for (int sent = 0; sent < kFloodFrames; sent += kPerWrite) {
    int n = kFloodFrames - sent < kPerWrite ? kFloodFrames - sent : kPerWrite;
    size_t off = 0, len = (size_t)n * 10;
    while (off < len) {
      ssize_t w = write(port, batch + off, len - off);
      if (w <= 0) return 1;
      off += (size_t)w;
    }
  }
  console("flood-init: 10000000 frames sent\n");
  serve_shutdown(port);
#elif defined(NETFLOOD)
  static char boot[1 << 16];
  int port = open_agent_port();
  if (handshake(port, boot, sizeof boot) != 0) return 1;
  net_flood(boot);
  serve_shutdown(port);
#endif
  return 0;
}
