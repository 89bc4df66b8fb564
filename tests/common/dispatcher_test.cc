#include "common/dispatcher.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "common/fd.h"

namespace msb {
namespace {

TEST(DispatcherTest, FdReadinessTimerAndPostRunInLoop) {
  Dispatcher d;
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  std::string got;
  std::vector<std::string> order;
  EventHandle watch = d.WatchFd(rd.get(), Dispatcher::kRead, [&](short) {
    char buf[16];
    ssize_t n = read(rd.get(), buf, sizeof buf);
    got.append(buf, n > 0 ? static_cast<size_t>(n) : 0);
    order.push_back("read");
    d.Exit();
  });
  EventHandle timer = d.Timer([&]() {
    order.push_back("timer");
    ASSERT_EQ(write(wr.get(), "ping", 4), 4);
  });
  timer.Arm(std::chrono::milliseconds(5));
  d.Post([&]() { order.push_back("posted"); });
  d.Run();
  EXPECT_EQ(got, "ping");
  EXPECT_EQ(order, (std::vector<std::string>{"posted", "timer", "read"}));
}

TEST(DispatcherTest, DeferredDeleteHappensAfterCallback) {
  Dispatcher d;
  struct Obj {
    bool* flag;
    ~Obj() { *flag = true; }
  };
  bool deleted = false;
  bool deleted_inside = true;
  std::unique_ptr<Obj> obj(new Obj{&deleted});
  d.Post([&]() {
    d.DeferDelete(std::move(obj));
    deleted_inside = deleted;
    d.Post([&]() { d.Exit(); });
  });
  d.Run();
  EXPECT_FALSE(deleted_inside);
  EXPECT_TRUE(deleted);
}

}  // namespace
}  // namespace msb
