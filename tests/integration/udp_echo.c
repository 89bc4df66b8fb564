/* udp_echo PORT...: a static UDP echo server for guest tests (busybox has no
 * UDP server). Answers every datagram to its sender, forever. One process
 * serves every port: on each wakeup it answers the ports in the order given,
 * so a datagram to an earlier port that arrived before one to a later port
 * is answered first (a test can use the later port's answer as a barrier). */
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>

#define MAX_PORTS 8

int main(int argc, char** argv) {
  if (argc < 2 || argc - 1 > MAX_PORTS) return 2;
  struct pollfd p[MAX_PORTS];
  int n = argc - 1;
  for (int i = 0; i < n; ++i) {
    int port = atoi(argv[i + 1]);
    if (port <= 0 || port > 65535) return 2;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) return 1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr*)&a, sizeof a) != 0) return 1;
    p[i].fd = fd;
    p[i].events = POLLIN;
  }
  for (;;) {
    if (poll(p, (nfds_t)n, -1) < 0) continue;
    for (int i = 0; i < n; ++i) {
      if (!(p[i].revents & POLLIN)) continue;
      char buf[2048];
      struct sockaddr_storage from;
      socklen_t len = sizeof from;
      ssize_t got = recvfrom(p[i].fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr*)&from, &len);
      if (got < 0) continue;
      (void)sendto(p[i].fd, buf, (size_t)got, 0, (struct sockaddr*)&from, len);
    }
  }
}
