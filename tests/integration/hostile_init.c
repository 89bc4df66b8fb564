/* Guest PID 1 stand-ins for fault tests. Built twice:
 *  -DSILENT: prints a console line and never talks to the host (boot timeout);
 *  -DEVIL:   opens the agent port and sends a frame header declaring a payload
 *            far over the 1 MiB bound, then floods garbage. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

static void console(const char* msg) {
  int fd = open("/dev/console", O_WRONLY);
  if (fd >= 0) {
    (void)!write(fd, msg, strlen(msg));
    close(fd);
  }
}

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
  console("evil-init: sending an oversized frame\n");
  unsigned char hdr[9] = {0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 2, 19};
  (void)!write(port, hdr, sizeof hdr);
  char junk[4096];
  memset(junk, 'A', sizeof junk);
  for (;;) (void)!write(port, junk, sizeof junk);
#endif
  return 0;
}
