"""A foreign gRPC client of the Verse gateway, as GoVerse's Python clients use it.

Stubs are generated from gateway/proto/gate.proto (written from client-protocol.md) and the
example protos with grpcio-tools; then, against the gateway at argv[1]: Register and its first
item, CreateObject, CallObject on the counter, a push from the chat room, DeleteObject, the
ReliableCallObject outcome shape, and the binding rule from another channel. Prints "ok".
"""

import os
import subprocess
import sys
import tempfile
import threading


def generate(root, out):
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc",
         "-I", os.path.join(root, "gateway", "proto"),
         "-I", os.path.join(root, "examples", "proto"),
         "--python_out", out, "--grpc_python_out", out,
         "gate.proto", "counter.proto", "chat.proto"],
        check=True)
    sys.path.insert(0, out)


def main():
    address, root = sys.argv[1], sys.argv[2]
    generate(root, tempfile.mkdtemp(prefix="verse-py-"))
    import grpc
    import gate_pb2
    import gate_pb2_grpc
    import counter_pb2
    import chat_pb2
    from google.protobuf import any_pb2

    def pack(message):
        packed = any_pb2.Any()
        packed.Pack(message)
        return packed

    channel = grpc.insecure_channel(address)
    stub = gate_pb2_grpc.GateServiceStub(channel)

    # Register: the first item is a RegisterResponse packed in Any.
    stream = stub.Register(gate_pb2.Empty())
    first = next(stream)
    assert first.type_url == "type.googleapis.com/gate.RegisterResponse", first.type_url
    registered = gate_pb2.RegisterResponse()
    assert first.Unpack(registered)
    client_id = registered.client_id
    assert "/" in client_id and len(client_id.split("/", 1)[1]) >= 32, client_id

    # Pushes arrive on a thread, as GoVerse's client reads them.
    pushes = []
    got_push = threading.Event()

    def read():
        try:
            for item in stream:
                pushes.append(item)
                got_push.set()
        except grpc.RpcError:
            pass

    threading.Thread(target=read, daemon=True).start()

    # Create (generated id and given id), call the counter.
    created = stub.CreateObject(gate_pb2.CreateObjectRequest(type="Counter", id=""))
    assert created.id.startswith("Counter-"), created.id
    assert stub.CreateObject(gate_pb2.CreateObjectRequest(type="Counter", id="py-1")).id == "py-1"
    call = gate_pb2.CallObjectRequest(client_id=client_id, type="Counter", id="py-1",
                                      method="Increment",
                                      request=pack(counter_pb2.IncrementRequest(amount=5)))
    response = counter_pb2.CounterResponse()
    assert stub.CallObject(call).response.Unpack(response)
    assert (response.name, response.value) == ("py-1", 5), response

    # A push from the chat room reaches the registered client.
    stub.CallObject(gate_pb2.CallObjectRequest(
        client_id=client_id, type="ChatRoom", id="py-room", method="Join",
        request=pack(chat_pb2.JoinRequest(user="py"))))
    stub.CallObject(gate_pb2.CallObjectRequest(
        type="ChatRoom", id="py-room", method="Post",
        request=pack(chat_pb2.PostRequest(user="other", text="hello python"))))
    assert got_push.wait(30), "no push within 30 s"
    message = chat_pb2.ChatMessage()
    assert pushes[0].Unpack(message), pushes[0].type_url
    assert message.text == "hello python", message

    # Delete: requires the type; the counter starts again at 0.
    try:
        stub.DeleteObject(gate_pb2.DeleteObjectRequest(id="py-1", type=""))
        raise AssertionError("DeleteObject without type succeeded")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert error.details() == "DeleteObject requires type", error.details()
    stub.DeleteObject(gate_pb2.DeleteObjectRequest(id="py-1", type="Counter"))
    call = gate_pb2.CallObjectRequest(type="Counter", id="py-1", method="Get",
                                      request=pack(counter_pb2.GetRequest()))
    assert stub.CallObject(call).response.Unpack(response) and response.value == 0

    # ReliableCallObject reports its outcome in-band.
    outcome = stub.ReliableCallObject(gate_pb2.ReliableCallObjectRequest(
        call_id="py-call-1", type="Counter", id="py-1", method="Increment",
        request=pack(counter_pb2.IncrementRequest(amount=1))))
    assert outcome.status == "SKIPPED", outcome
    assert outcome.error == "reliable calls are not supported yet", outcome

    # Another connection cannot act as this client. (gRPC C-core shares one connection between
    # channels to the same target unless a channel asks for its own subchannel pool.)
    own_pool = [("grpc.use_local_subchannel_pool", 1)]
    other = gate_pb2_grpc.GateServiceStub(grpc.insecure_channel(address, options=own_pool))
    try:
        other.CallObject(gate_pb2.CallObjectRequest(
            client_id=client_id, type="Counter", id="py-1", method="Get",
            request=pack(counter_pb2.GetRequest())))
        raise AssertionError("a foreign connection used the client id")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
        assert error.details() == "client id not bound to this connection", error.details()

    # Unknown type: NOT_FOUND, and the gateway keeps serving.
    try:
        other.CallObject(gate_pb2.CallObjectRequest(type="Nope", id="x", method="Get",
                                                    request=pack(counter_pb2.GetRequest())))
        raise AssertionError("an unknown type succeeded")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
    assert other.CallObject(call).response.Unpack(response)

    stream.cancel()
    print("ok")


if __name__ == "__main__":
    main()
