"""How many bytes per second one loopback TCP stream carries on this machine."""
import socket
import threading
import time

TOTAL = 4 << 30
CHUNK = 1 << 20

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)


def receive() -> None:
    conn, _ = listener.accept()
    buf = memoryview(bytearray(CHUNK))
    got = 0
    while got < TOTAL:
        n = conn.recv_into(buf)
        if n == 0:
            break
        got += n


receiver = threading.Thread(target=receive)
receiver.start()
sender = socket.create_connection(listener.getsockname())
data = b"x" * CHUNK
started = time.perf_counter()
for _ in range(TOTAL // CHUNK):
    sender.sendall(data)
sender.close()
receiver.join()
print(f"loopback: {TOTAL / (time.perf_counter() - started) / 1e9:.2f} GB/s")
