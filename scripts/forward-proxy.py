#!/usr/bin/env python3
# A minimal forward proxy (HTTP absolute-URI requests and CONNECT tunnels),
# so scripts/check-fresh-debian.sh can reach the package registries from a
# network namespace of its own. Usage: forward-proxy.py ADDRESS PORT
import asyncio, sys

async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        try:
            w.close()
        except Exception:
            pass

async def handle(cr, cw):
    try:
        head = await cr.readuntil(b"\r\n\r\n")
    except Exception:
        cw.close(); return
    line = head.split(b"\r\n", 1)[0].decode()
    method, target, version = line.split(" ", 2)
    if method == "CONNECT":
        host, port = target.rsplit(":", 1)
        try:
            ur, uw = await asyncio.open_connection(host, int(port))
        except Exception:
            cw.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n"); await cw.drain(); cw.close(); return
        cw.write(b"HTTP/1.1 200 Connection established\r\n\r\n"); await cw.drain()
    else:
        rest = target.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        try:
            ur, uw = await asyncio.open_connection(host, int(port or 80))
        except Exception:
            cw.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n"); await cw.drain(); cw.close(); return
        lines = head.split(b"\r\n")
        lines[0] = f"{method} /{path} {version}".encode()
        lines = [l for l in lines if not l.lower().startswith(b"proxy-connection:")]
        uw.write(b"\r\n".join(lines)); await uw.drain()
    await asyncio.gather(pipe(cr, uw), pipe(ur, cw))

async def main():
    server = await asyncio.start_server(handle, sys.argv[1], int(sys.argv[2]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
