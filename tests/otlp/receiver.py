#!/usr/bin/env python3
"""An OTLP logs receiver for Portwarden's tests, built on the official
protos (the `opentelemetry-proto` package) and grpcio.

It serves the collector's LogsService over gRPC and OTLP/HTTP (binary
protobuf, optionally gzip) and prints every request it accepts as one JSON
line on stdout (protobuf's JSON mapping), then flushes.

Faults, for the tests: `--unavailable N` answers the first N requests with
UNAVAILABLE (HTTP 503); `--reject N` answers each request with a partial
success rejecting N records; `--tls CERT KEY [--client-ca CA]` serves TLS,
asking for a client certificate signed by CA when given.
"""

import argparse
import gzip
import http.server
import json
import ssl
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

LOCK = threading.Lock()
STATE = {"requests": 0}


def decide(args):
    """Counts a request; returns (unavailable, rejected records)."""
    with LOCK:
        STATE["requests"] += 1
        return STATE["requests"] <= args.unavailable, args.reject


def emit(request, transport):
    line = json_format.MessageToDict(request)
    line["transport"] = transport
    with LOCK:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


def response(rejected):
    resp = logs_service_pb2.ExportLogsServiceResponse()
    if rejected:
        resp.partial_success.rejected_log_records = rejected
        resp.partial_success.error_message = "test receiver rejects %d" % rejected
    return resp


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, args):
        self.args = args

    def Export(self, request, context):
        unavailable, rejected = decide(self.args)
        if unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, "test receiver is down")
        emit(request, "grpc")
        return response(rejected)


def http_handler(args):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/logs" or self.headers.get("Content-Type") != "application/x-protobuf":
                return self.answer(404, b"wrong path or content type")
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            unavailable, rejected = decide(args)
            if unavailable:
                return self.answer(503, b"test receiver is down")
            request = logs_service_pb2.ExportLogsServiceRequest()
            request.ParseFromString(body)
            emit(request, "http")
            self.answer(200, response(rejected).SerializeToString())

        def answer(self, code, payload):
            self.send_response(code)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_):
            pass

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--unavailable", type=int, default=0)
    p.add_argument("--reject", type=int, default=0)
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--client-ca")
    args = p.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(args), server)
    address = "127.0.0.1:%d" % args.grpc_port
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", args.http_port), http_handler(args))
    if args.tls:
        cert, key = (open(f, "rb").read() for f in args.tls)
        client_ca = open(args.client_ca, "rb").read() if args.client_ca else None
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                            require_client_auth=client_ca is not None)
        server.add_secure_port(address, creds)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*args.tls)
        if args.client_ca:
            ctx.load_verify_locations(args.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    else:
        server.add_insecure_port(address)
    server.start()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    sys.stderr.write("otlp receiver ready\n")
    sys.stderr.flush()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
