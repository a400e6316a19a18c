"""A foreign gRPC client of the Verse gateway, written from docs/client-protocol.md alone.

It generates its stubs from the project's .proto files with grpcio-tools (as any Python client
would), then drives the GoVerse-compatible `gate.GateService` and checks every answer. Run by
the Rust test `python_client` in `tests/it/`; exits non-zero with a message on the first broken
promise.

    python gate_client.py --gateway 127.0.0.1:PORT --proto-root REPO_ROOT
"""

import argparse
import importlib
import os
import sys
import tempfile
import threading


def generate_stubs(repo_root, out_dir):
    from grpc_tools import protoc
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    protos = [
        ("gateway/proto", "gate.proto"),
        ("examples/proto", "counter.proto"),
        ("examples/proto", "chat.proto"),
    ]
    for folder, name in protos:
        include = os.path.join(repo_root, folder)
        args = [
            "protoc",
            f"-I{include}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            os.path.join(include, name),
        ]
        if protoc.main(args) != 0:
            fail(f"protoc failed on {folder}/{name}")
    sys.path.insert(0, out_dir)


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def expect_status(call, code, fragment=None):
    import grpc

    try:
        call()
    except grpc.RpcError as error:
        check(error.code() == code, f"expected {code}, got {error.code()}: {error.details()}")
        if fragment is not None:
            check(fragment in (error.details() or ""), f"{fragment!r} not in {error.details()!r}")
        return error
    fail(f"expected {code}, the call succeeded")


def pack(message):
    from google.protobuf import any_pb2

    packed = any_pb2.Any()
    packed.Pack(message)  # type.googleapis.com/<full name>
    return packed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--proto-root", required=True)
    args = parser.parse_args()

    import grpc

    out_dir = tempfile.mkdtemp(prefix="verse-py-stubs-")
    generate_stubs(args.proto_root, out_dir)
    gate_pb2 = importlib.import_module("gate_pb2")
    gate_pb2_grpc = importlib.import_module("gate_pb2_grpc")
    counter_pb2 = importlib.import_module("counter_pb2")
    chat_pb2 = importlib.import_module("chat_pb2")

    # One channel, hence one HTTP/2 connection, like GoVerse's clients; keepalive pings every
    # 30 s as they send them.
    options = [("grpc.keepalive_time_ms", 30000), ("grpc.keepalive_permit_without_calls", 1)]
    channel = grpc.insecure_channel(args.gateway, options=options)
    grpc.channel_ready_future(channel).result(timeout=30)
    gate = gate_pb2_grpc.GateServiceStub(channel)

    # Register: the first item is a RegisterResponse packed in Any.
    stream = gate.Register(gate_pb2.Empty())
    first = next(stream)
    check(
        first.type_url == "type.googleapis.com/gate.RegisterResponse",
        f"first Register item has type URL {first.type_url!r}",
    )
    registered = gate_pb2.RegisterResponse()
    check(first.Unpack(registered), "first item does not unpack as RegisterResponse")
    client_id = registered.client_id
    check(len(client_id) > 0, "empty client id")

    # Pushed items arrive on the Register stream; read them on a thread.
    pushes = []
    pushed = threading.Condition()

    def read_pushes():
        try:
            for item in stream:
                with pushed:
                    pushes.append(item)
                    pushed.notify_all()
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read_pushes, daemon=True)
    reader.start()

    # Create: an empty id generates "<Type>-<unique>"; a given id is idempotent.
    created = gate.CreateObject(gate_pb2.CreateObjectRequest(type="Counter", id=""))
    check(created.id.startswith("Counter-"), f"generated id {created.id!r}")
    counter_id = "py-counter-1"
    again = gate.CreateObject(gate_pb2.CreateObjectRequest(type="Counter", id=counter_id))
    check(again.id == counter_id, f"create returned {again.id!r}")
    gate.CreateObject(gate_pb2.CreateObjectRequest(type="Counter", id=counter_id))

    def call(method, request, object_id=counter_id, caller=client_id, object_type="Counter"):
        response = gate.CallObject(
            gate_pb2.CallObjectRequest(
                client_id=caller,
                type=object_type,
                id=object_id,
                method=method,
                request=pack(request),
            ),
            timeout=30,
        )
        return response.response

    answer = call("Increment", counter_pb2.IncrementRequest(amount=5))
    check(
        answer.type_url == "type.googleapis.com/counter.CounterResponse",
        f"response type URL {answer.type_url!r}",
    )
    value = counter_pb2.CounterResponse()
    answer.Unpack(value)
    check(value.name == counter_id and value.value == 5, f"after Increment(5): {value}")
    call("Decrement", counter_pb2.DecrementRequest(amount=2), caller="")  # anonymous
    call("Get", counter_pb2.GetRequest()).Unpack(value)
    check(value.value == 3, f"after Decrement(2): {value}")

    # Virtual activation: a counter never created answers at 0.
    call("Get", counter_pb2.GetRequest(), object_id="py-virtual").Unpack(value)
    check(value.value == 0 and value.name == "py-virtual", f"virtual counter: {value}")

    # Errors are gRPC statuses.
    expect_status(
        lambda: call("Get", counter_pb2.GetRequest(), object_type="NoSuchType"),
        grpc.StatusCode.NOT_FOUND,
    )
    expect_status(
        lambda: call("NoSuchMethod", counter_pb2.GetRequest()), grpc.StatusCode.NOT_FOUND
    )
    expect_status(
        lambda: gate.DeleteObject(gate_pb2.DeleteObjectRequest(id=counter_id, type="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "DeleteObject requires type",
    )

    # A client id belongs to the connection that registered it.
    other = grpc.insecure_channel(args.gateway, options=[("grpc.use_local_subchannel_pool", 1)])
    other_gate = gate_pb2_grpc.GateServiceStub(other)
    expect_status(
        lambda: other_gate.CallObject(
            gate_pb2.CallObjectRequest(
                client_id=client_id,
                type="Counter",
                id=counter_id,
                method="Get",
                request=pack(counter_pb2.GetRequest()),
            )
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "client id not bound to this connection",
    )
    other.close()

    # Pushes from a chat room reach the registered client on its Register stream.
    room = "py-room"
    call("Join", chat_pb2.JoinRequest(), object_id=room, object_type="ChatRoom")
    call(
        "Post",
        chat_pb2.PostRequest(text="hello from python"),
        object_id=room,
        object_type="ChatRoom",
    )
    with pushed:
        pushed.wait_for(lambda: len(pushes) > 0, timeout=30)
        check(len(pushes) > 0, "no push arrived within 30 s")
        item = pushes[0]
    check(item.type_url.startswith("type.googleapis.com/chat."), f"push type {item.type_url!r}")

    # Reliable calls answer in-band.
    reliable = gate.ReliableCallObject(
        gate_pb2.ReliableCallObjectRequest(
            call_id="py-call-1",
            type="Counter",
            id=counter_id,
            method="Increment",
            request=pack(counter_pb2.IncrementRequest(amount=1)),
        )
    )
    check(
        reliable.status in ("SUCCESS", "FAILED", "SKIPPED", "PENDING", "UNKNOWN"),
        f"reliable-call status {reliable.status!r}",
    )
    if reliable.status == "SKIPPED":
        check(reliable.error != "", "a SKIPPED reliable call must say why")

    # Delete: succeeds, also for an absent object; the next call starts from 0.
    gate.DeleteObject(gate_pb2.DeleteObjectRequest(id=counter_id, type="Counter"))
    gate.DeleteObject(gate_pb2.DeleteObjectRequest(id="py-never-existed", type="Counter"))
    call("Get", counter_pb2.GetRequest()).Unpack(value)
    check(value.value == 0, f"after delete: {value}")

    stream.cancel()
    channel.close()
    print("python client: all checks passed")


if __name__ == "__main__":
    main()
