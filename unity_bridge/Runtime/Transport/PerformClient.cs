// The Perform stream over grpc-dotnet (Grpc.Net.Client) + Cysharp's YetAnotherHttpHandler.
// Debian ships no grpc_csharp_plugin, so the client is written by hand the way generated clients
// are: a Method<TRequest, TResponse> of type DuplexStreaming invoked through the channel's CallInvoker.
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using Cysharp.Net.Http;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using LpmNpc.Core;
using V1 = LpmNpc.V1;

namespace LpmNpc.Unity
{
    /// <summary>
    /// The channels to each sidecar address: one by default, shared by every NPC (HTTP/2 multiplexes
    /// their streams). A sidecar started with `lpm-npc serve --fronts N` spreads *connections* over N
    /// server processes, so set ConnectionsPerSidecar to N (before the first NPC connects): each new
    /// Perform stream then takes the channel (its own connection) with the fewest open streams.
    /// Tied to the application's lifetime: Shutdown() (called on quit and when the editor leaves Play
    /// mode) cancels every stream and disposes the channels, so nothing keeps the editor waiting.
    /// </summary>
    public static class SidecarChannels
    {
        private sealed class Pool
        {
            public GrpcChannel[] Channels;
            public ConnectionSpread Spread;
        }

        private static readonly object Lock = new object();
        private static readonly Dictionary<string, Pool> Pools = new Dictionary<string, Pool>();
        private static CancellationTokenSource _lifetime = new CancellationTokenSource();

        public const int MaxMessageBytes = 32 * 1024 * 1024;  // a 1024x1024 RGBA frame is 4 MiB

        /// <summary>Connections to each sidecar; read when an address is first used.</summary>
        public static int ConnectionsPerSidecar = 1;

        public static CancellationToken Lifetime
        {
            get { lock (Lock) return _lifetime.Token; }
        }

        private static GrpcChannel NewChannel(string address)
        {
            var handler = new YetAnotherHttpHandler { Http2Only = true };  // h2c: no TLS, no HTTP/1 upgrade
            return GrpcChannel.ForAddress(address, new GrpcChannelOptions
            {
                HttpHandler = handler,   // a handler of its own: a connection of its own
                DisposeHttpClient = true,
                MaxReceiveMessageSize = MaxMessageBytes,
                MaxSendMessageSize = MaxMessageBytes,
            });
        }

        private static Pool PoolFor(string address)
        {
            Pool pool;
            if (Pools.TryGetValue(address, out pool)) return pool;
            int n = Math.Max(1, ConnectionsPerSidecar);
            pool = new Pool { Channels = new GrpcChannel[n], Spread = new ConnectionSpread(n) };
            for (int i = 0; i < n; i++) pool.Channels[i] = NewChannel(address);
            Pools[address] = pool;
            return pool;
        }

        /// <summary>"http://127.0.0.1:50051" (plaintext h2c to the local sidecar): its first channel.</summary>
        public static GrpcChannel Get(string address)
        {
            lock (Lock) return PoolFor(address).Channels[0];
        }

        /// <summary>The channel for a new stream; pass `slot` to Release when the stream ends.</summary>
        public static GrpcChannel Acquire(string address, out int slot)
        {
            lock (Lock)
            {
                var pool = PoolFor(address);
                slot = pool.Spread.Acquire();
                return pool.Channels[slot];
            }
        }

        public static void Release(string address, int slot)
        {
            lock (Lock)
            {
                Pool pool;
                if (Pools.TryGetValue(address, out pool) && slot < pool.Spread.Count) pool.Spread.Release(slot);
            }
        }

        public static void Shutdown()
        {
            var channels = new List<GrpcChannel>();
            lock (Lock)
            {
                _lifetime.Cancel();
                _lifetime.Dispose();
                _lifetime = new CancellationTokenSource();
                foreach (var pool in Pools.Values) channels.AddRange(pool.Channels);
                Pools.Clear();
            }
            foreach (var c in channels)
            {
                try { c.Dispose(); } catch (Exception) { /* already gone */ }
            }
        }
    }

    /// <summary>The Perform method descriptor, as a generated client would declare it.</summary>
    public static class NpcServiceMethods
    {
        public const string ServiceName = "lpm_npc.v1.NpcService";

        private static readonly Marshaller<V1.ClientMessage> ClientMarshaller =
            Marshallers.Create<V1.ClientMessage>(m => m.ToByteArray(), bytes => V1.ClientMessage.Parser.ParseFrom(bytes));

        private static readonly Marshaller<V1.ServerMessage> ServerMarshaller =
            Marshallers.Create<V1.ServerMessage>(m => m.ToByteArray(), bytes => V1.ServerMessage.Parser.ParseFrom(bytes));

        public static readonly Method<V1.ClientMessage, V1.ServerMessage> Perform =
            new Method<V1.ClientMessage, V1.ServerMessage>(
                MethodType.DuplexStreaming, ServiceName, "Perform", ClientMarshaller, ServerMarshaller);
    }

    /// <summary>
    /// One open Perform call. Sends go through a queue drained by a single writer task (grpc allows
    /// only one pending write); received messages are queued for the main thread to handle.
    /// </summary>
    public sealed class PerformCall : IDisposable
    {
        private readonly AsyncDuplexStreamingCall<V1.ClientMessage, V1.ServerMessage> _call;
        private readonly CancellationTokenSource _cts;
        private readonly ConcurrentQueue<V1.ClientMessage> _outbox = new ConcurrentQueue<V1.ClientMessage>();
        private readonly SemaphoreSlim _outboxSignal = new SemaphoreSlim(0);
        public readonly ConcurrentQueue<V1.ServerMessage> Inbox = new ConcurrentQueue<V1.ServerMessage>();
        private volatile bool _completing;

        /// <summary>Set when the stream ends: null for a clean end, else the failure.</summary>
        public volatile bool Ended;
        public Exception Failure;
        public StatusCode EndStatus = StatusCode.OK;

        /// <summary>Called on the network thread for every frame (fills the jitter buffer directly).</summary>
        public Action<V1.VideoFrame> OnFrame;

        private readonly string _address;
        private int _slot = -1;   // this call's connection among the sidecar's (SidecarChannels), until Dispose

        public PerformCall(string address, CancellationToken lifetime)
        {
            _cts = CancellationTokenSource.CreateLinkedTokenSource(lifetime);
            _address = address;
            var invoker = SidecarChannels.Acquire(address, out _slot).CreateCallInvoker();
            _call = invoker.AsyncDuplexStreamingCall(NpcServiceMethods.Perform, null,
                                                     new CallOptions(cancellationToken: _cts.Token));
            Task.Run(() => WriteLoop());
            Task.Run(() => ReadLoop());
        }

        public void Send(V1.ClientMessage message)
        {
            if (_completing || Ended) return;
            _outbox.Enqueue(message);
            _outboxSignal.Release();
        }

        /// <summary>Half-close: the server finishes queued NPC speech, then ends the stream.</summary>
        public void CompleteSending()
        {
            _completing = true;
            _outboxSignal.Release();
        }

        private async Task WriteLoop()
        {
            try
            {
                while (!_cts.IsCancellationRequested)
                {
                    await _outboxSignal.WaitAsync(_cts.Token).ConfigureAwait(false);
                    V1.ClientMessage msg;
                    while (_outbox.TryDequeue(out msg))
                        await _call.RequestStream.WriteAsync(msg).ConfigureAwait(false);
                    if (_completing)
                    {
                        await _call.RequestStream.CompleteAsync().ConfigureAwait(false);
                        return;
                    }
                }
            }
            catch (Exception) { /* the read loop reports how the call ended */ }
        }

        private async Task ReadLoop()
        {
            try
            {
                var responses = _call.ResponseStream;
                while (await responses.MoveNext(_cts.Token).ConfigureAwait(false))
                {
                    var msg = responses.Current;
                    if (msg.MsgCase == V1.ServerMessage.MsgOneofCase.Frame && OnFrame != null) OnFrame(msg.Frame);
                    else Inbox.Enqueue(msg);
                }
            }
            catch (RpcException e)
            {
                Failure = e;
                EndStatus = e.StatusCode;
            }
            catch (Exception e)
            {
                Failure = e;
                EndStatus = _cts.IsCancellationRequested ? StatusCode.Cancelled : StatusCode.Unavailable;
            }
            finally
            {
                Ended = true;
            }
        }

        public void Dispose()
        {
            try { _cts.Cancel(); } catch (ObjectDisposedException) { }
            _call.Dispose();
            _outboxSignal.Release();
            int slot = Interlocked.Exchange(ref _slot, -1);
            if (slot >= 0) SidecarChannels.Release(_address, slot);
        }
    }
}
