/* udp_echo PORT: a static UDP echo server for guest tests (busybox has no UDP
 * server). Answers every datagram to its sender, forever. */
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  int port = atoi(argv[1]);
  if (port <= 0 || port > 65535) return 2;
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return 1;
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(fd, (struct sockaddr*)&a, sizeof a) != 0) return 1;
  for (;;) {
    char buf[2048];
    struct sockaddr_storage from;
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr*)&from, &len);
    if (n < 0) continue;
    (void)sendto(fd, buf, (size_t)n, 0, (struct sockaddr*)&from, len);
  }
}
