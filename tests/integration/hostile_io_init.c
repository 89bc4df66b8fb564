/* Guest PID 1 stand-ins for the host-side input tests (the other fault modes
 * are in hostile_init.c; only BADREADY and CPOUT are built from this file).
 * Built once per mode:
 *  -DSILENT:   prints a console line and never talks to the host (boot timeout);
 *  -DEVIL:     opens the agent port and sends a frame header declaring a payload
 *              far over the 1 MiB bound, then floods garbage;
 *  -DBADREADY: says hello, then fails its boot with terminal escapes in the
 *              error text;
 *  -DCPOUT:    boots, answers every exec with exit 0, and answers kCopyOut of
 *              /evil, /dotdot, /through and /endless with hand-made tar
 *              streams: absolute names, `..`, hard links and symlinks out of
 *              the destination, a device node, setuid bits, and an endless
 *              file (respecting the credit window, as agent/protocol.h says);
 *              /dotdot holds a `..` name; /errors sends 500 channel errors. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>

static void console(const char* msg) {
  int fd = open("/dev/console", O_WRONLY);
  if (fd >= 0) {
    (void)!write(fd, msg, strlen(msg));
    close(fd);
  }
}


#if !defined(SILENT) && !defined(EVIL)
static int agent_port = -1;
static char frame_buf[1 << 20];
static int64_t credit = 256 * 1024; /* kCreditWindow */

static void write_all(const void* p, size_t n) {
  const char* c = p;
  while (n > 0) {
    ssize_t w = write(agent_port, c, n);
    if (w <= 0) continue;
    c += w;
    n -= (size_t)w;
  }
}

static void read_all(void* p, size_t n) {
  char* c = p;
  while (n > 0) {
    ssize_t r = read(agent_port, c, n);
    if (r <= 0) continue;
    c += r;
    n -= (size_t)r;
  }
}

static void send_frame(uint32_t id, uint8_t kind, const void* payload, size_t n) {
  unsigned char h[9] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n,
                        (unsigned char)(id >> 24), (unsigned char)(id >> 16), (unsigned char)(id >> 8), (unsigned char)id,
                        kind};
  write_all(h, sizeof h);
  write_all(payload, n);
}

/* One frame into frame_buf (NUL-terminated); returns its length. */
static uint32_t read_frame(uint32_t* id, uint8_t* kind) {
  unsigned char h[9];
  read_all(h, sizeof h);
  uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
  *id = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
  *kind = h[8];
  if (len >= sizeof frame_buf) len = sizeof frame_buf - 1;
  read_all(frame_buf, len);
  frame_buf[len] = 0;
  return len;
}

static long long json_number(const char* text, const char* key) {
  const char* at = strstr(text, key);
  return at == NULL ? 0 : atoll(at + strlen(key));
}

/* Stream bytes as kData, waiting for credit as the host returns it. */
static void send_data(uint32_t id, const char* p, size_t n) {
  while (n > 0) {
    while (credit <= 0) {
      uint32_t rid;
      uint8_t kind;
      read_frame(&rid, &kind);
      if (kind == 24) credit += json_number(frame_buf, "\"bytes\":");
    }
    size_t chunk = n < 65536 ? n : 65536;
    if ((int64_t)chunk > credit) chunk = (size_t)credit;
    send_frame(id, 34, p, chunk);
    credit -= (int64_t)chunk;
    p += chunk;
    n -= chunk;
  }
}

/* A ustar header: name, mode, size, type, link target. */
static void tar_header(uint32_t id, const char* name, unsigned mode, unsigned long long size, char type,
                       const char* link) {
  char h[512];
  memset(h, 0, sizeof h);
  snprintf(h, 100, "%s", name);
  snprintf(h + 100, 8, "%07o", mode);
  snprintf(h + 108, 8, "%07o", 0);
  snprintf(h + 116, 8, "%07o", 0);
  snprintf(h + 124, 12, "%011llo", size);
  snprintf(h + 136, 12, "%011o", 0);
  h[156] = type;
  if (link != NULL) snprintf(h + 157, 100, "%s", link);
  memcpy(h + 257, "ustar", 6);
  memcpy(h + 263, "00", 2);
  if (type == '3') {
    snprintf(h + 329, 8, "%07o", 1);
    snprintf(h + 337, 8, "%07o", 3);
  }
  memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (int i = 0; i < 512; ++i) sum += (unsigned char)h[i];
  snprintf(h + 148, 8, "%06o", sum);
  send_data(id, h, sizeof h);
}

static void tar_file(uint32_t id, const char* name, unsigned mode, const char* body) {
  size_t n = strlen(body);
  tar_header(id, name, mode, n, '0', NULL);
  char block[512];
  memset(block, 0, sizeof block);
  memcpy(block, body, n); /* bodies here are under 512 bytes */
  send_data(id, block, sizeof block);
}

static void copy_out(uint32_t id, const char* req, uint32_t len) {
  (void)len;
  if (strstr(req, "\"/evil\"") != NULL) {
    tar_header(id, "evil/", 0777, 0, '5', NULL);
    tar_file(id, "evil/ok.txt", 06777, "fine\n");
    tar_file(id, "/tmp/msb-cp-absolute", 0644, "absolute\n");
    tar_header(id, "evil/hard", 0644, 0, '1', "/etc/passwd");
    tar_header(id, "evil/dev", 0666, 0, '3', NULL);
    tar_header(id, "evil/link", 0777, 0, '2', "../../outside");
    tar_file(id, "evil/after.txt", 0600, "after\n");
  } else if (strstr(req, "\"/through\"") != NULL) {
    tar_header(id, "through/", 0755, 0, '5', NULL);
    tar_header(id, "through/link", 0777, 0, '2', "../../outside");
    tar_file(id, "through/link/pwned", 0644, "through a symlink\n");
  } else if (strstr(req, "\"/dotdot\"") != NULL) {
    tar_header(id, "dotdot/", 0755, 0, '5', NULL);
    tar_file(id, "dotdot/../../msb-cp-dotdot", 0644, "dotdot\n");
  } else if (strstr(req, "\"/errors\"") != NULL) {
    /* Channel errors, each worth a line in the supervisor's log. */
    const char* e = "{\"message\":\"noise\"}";
    for (int i = 0; i < 500; ++i) send_frame(0, 127, e, strlen(e));
    send_frame(id, 35, "{\"error\":\"made noise\"}", 22);
    return;
  } else if (strstr(req, "\"/endless\"") != NULL) {
    /* Declares the largest ustar size, then never stops. */
    tar_header(id, "endless", 0644, 077777777777ull, '0', NULL);
    static char zeros[65536];
    for (;;) send_data(id, zeros, sizeof zeros);
  }
  char end[1024];
  memset(end, 0, sizeof end);
  send_data(id, end, sizeof end);
  send_frame(id, 34, "", 0);
  send_frame(id, 35, "{\"ok\":true}", 11);
}
#endif

int main(void) {
  mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
  mount("sysfs", "/sys", "sysfs", 0, NULL);
#ifdef SILENT
  console("silent-init: waiting forever\n");
  for (;;) pause();
#else
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
#ifdef EVIL
  console("evil-init: sending an oversized frame\n");
  unsigned char hdr[9] = {0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 2, 19};
  (void)!write(port, hdr, sizeof hdr);
  char junk[4096];
  memset(junk, 'A', sizeof junk);
  for (;;) (void)!write(port, junk, sizeof junk);
#else
  console("hostile-init: speaking the agent protocol\n");
  agent_port = port;
  send_frame(0, 1, "{\"version\":1}", 13);
  for (;;) {
    uint32_t id;
    uint8_t kind;
    uint32_t len = read_frame(&id, &kind);
    if (kind == 2) { /* kBoot */
#ifdef BADREADY
      const char* bad = "{\"error\":\"no root \\u001b]0;owned\\u0007\\u001b[2J\\u001b[31mdisk\"}";
      send_frame(0, 3, bad, strlen(bad));
#else
      send_frame(0, 3, "{}", 2);
#endif
    } else if (kind == 16) { /* kExec: started, exit 0 */
      send_frame(id, 17, "{\"pid\":1}", 9);
      send_frame(id, 21, "{\"code\":0,\"signal\":0}", 21);
    } else if (kind == 33) { /* kCopyOut */
      copy_out(id, frame_buf, len);
    } else if (kind == 24) { /* kCredit */
      credit += json_number(frame_buf, "\"bytes\":");
    } else if (kind == 48) { /* kShutdown */
      send_frame(0, 35, "{\"ok\":true}", 11);
      reboot(RB_POWER_OFF);
    }
  }
#endif
#endif
  return 0;
}
