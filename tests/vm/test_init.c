/* A trivial PID 1 for boot tests: writes a marker line to the console and
 * powers the VM off. Built static by tests/vm/CMakeLists.txt. Not agentd. */
#include <fcntl.h>
#include <string.h>
#include <sys/reboot.h>
#include <unistd.h>

int main(void) {
  static const char kMarker[] = "msb-test-init: hello from the guest\n";
  int fd = open("/dev/console", O_WRONLY | O_NOCTTY);
  if (fd < 0) fd = 1;
  ssize_t n = write(fd, kMarker, strlen(kMarker));
  (void)n;
  sync();
  reboot(RB_POWER_OFF);
  /* Power-off failed: a reboot ends QEMU started with -no-reboot. */
  reboot(RB_AUTOBOOT);
  for (;;) pause();
}
