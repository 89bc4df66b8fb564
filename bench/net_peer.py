import socket, sys, threading, time
# peer.py RESULTS SINK_BYTES SOURCE_BYTES CONNECTS: three listeners on
# 127.0.0.1; prints their ports, then appends one line per measurement.
out, sink_n, src_n, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def listener():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('127.0.0.1', 0)); s.listen(128); return s
ls = [listener() for _ in range(3)]
print(' '.join(str(s.getsockname()[1]) for s in ls), flush=True)
def log(line):
    with open(out, 'a') as f: f.write(line + '\n')
def sink(s):
    while True:
        c, _ = s.accept(); got = 0; t0 = None
        while got < sink_n:
            d = c.recv(1 << 20)
            if not d: break
            if t0 is None: t0 = time.monotonic()
            got += len(d)
        dt = time.monotonic() - t0 if t0 else 0
        c.close(); log('guest_to_host %d %.6f' % (got, dt))
def source(s):
    buf = b'\0' * (1 << 20)
    while True:
        c, _ = s.accept(); t0 = time.monotonic(); sent = 0
        try:
            while sent < src_n:
                sent += c.send(buf[:min(len(buf), src_n - sent)])
            c.shutdown(socket.SHUT_WR)
            c.recv(1)  # the guest closes once it read everything
        except OSError: pass
        dt = time.monotonic() - t0; c.close(); log('host_to_guest %d %.6f' % (sent, dt))
def connects(s):
    while True:
        n = 0; t0 = None
        while n < conns:
            c, _ = s.accept(); n += 1
            if t0 is None: t0 = time.monotonic()
            c.close()
        log('connects %d %.6f' % (n - 1, time.monotonic() - t0))
for fn, s in zip((sink, source, connects), ls):
    threading.Thread(target=fn, args=(s,), daemon=True).start()
threading.Event().wait()
