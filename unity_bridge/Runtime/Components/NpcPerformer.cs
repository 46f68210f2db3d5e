using System;
using System.Collections;
using LpmNpc.Core;
using UnityEngine;
using UnityEngine.Events;
using V1 = LpmNpc.V1;

namespace LpmNpc.Unity
{
    /// <summary>
    /// Owns one NPC's Perform session: connects, configures (character, size, fps, pixel format),
    /// reconnects with backoff and the resume token, and raises C# events on the main thread.
    /// Other NpcXxx components on the same GameObject talk to the session through it.
    /// </summary>
    [DisallowMultipleComponent]
    [AddComponentMenu("LPM NPC/NPC Performer")]
    public sealed class NpcPerformer : MonoBehaviour
    {
        [Tooltip("Sidecar address (plaintext HTTP/2). Start it with: lpm-npc serve --port 50051")]
        public string address = "http://127.0.0.1:50051";

        [Tooltip("Character id from RegisterCharacter, or \"default\".")]
        public string characterId = "default";

        [Range(16, 1024)] public int size = 512;
        [Tooltip("10, 12, 15, 20, 24, 25, 30 or 60")] public int fps = 30;
        public global::LpmNpc.Core.PixelFormat pixelFormat = global::LpmNpc.Core.PixelFormat.Rgba8;
        [Tooltip("Alpha = person matte, for billboards.")] public bool alphaMatte = true;
        [Tooltip("Also stream RigFrames (blendshape weights, head pose, gaze).")] public bool sendRig;
        [Tooltip("Clock of VideoFrame.pts_samples: the sample rate of your TTS.")] public int npcSampleRate = 24000;
        [Tooltip("Seconds added to the server lookahead before frames/sound are presented (network jitter).")]
        [Range(0.0f, 0.19f)] public float presentationMargin = 0.06f;
        public bool connectOnEnable = true;

        // -- C# events (main thread) ----------------------------------------------------------------
        public event Action<SessionInfo> SessionStarted;
        /// <summary>A frame became due on the audio clock (NpcBillboard shows it).</summary>
        public event Action<FrameData> FrameDue;
        public event Action<V1.RigFrame> RigFrameReceived;
        public event Action<long> SpeechStarted;   // pts_us
        public event Action<long> SpeechEnded;
        public event Action<V1.Event> EventReceived;
        public event Action<V1.Stats> StatsReceived;
        /// <summary>How a free-text direction was understood: the primitives / emotion chosen, with confidence.</summary>
        public event Action<V1.DirectionResult> DirectionApplied;
        /// <summary>(grpc status code, message, fatal).</summary>
        public event Action<int, string, bool> ErrorReceived;

        [Serializable] public class StringEvent : UnityEvent<string> { }
        public UnityEvent onSpeechStarted = new UnityEvent();
        public UnityEvent onSpeechEnded = new UnityEvent();
        public StringEvent onError = new StringEvent();

        public NpcSessionCore Core { get; private set; }
        public SessionInfo Info { get { return Core != null ? Core.Info : null; } }
        public bool Connected { get { return _call != null && !_call.Ended && Core != null && Core.Running; } }
        public V1.Stats LastStats { get; private set; }

        private PerformCall _call;
        private readonly ReconnectBackoff _backoff = new ReconnectBackoff();
        private Coroutine _connectLoop;
        private bool _wantConnected;

        private void Awake()
        {
            Core = new NpcSessionCore(BuildSettings(), Send);
        }

        private PerformerSettings BuildSettings()
        {
            return new PerformerSettings
            {
                CharacterId = characterId,
                Size = (uint)Mathf.Clamp(size, 16, 1024),
                Fps = LodPolicy.SnapFps((uint)Mathf.Max(1, fps)),
                PixelFormat = pixelFormat,
                // Texture2D rows go bottom-up: flipped raw buffers load upright. JPEG is decoded by
                // Texture2D.LoadImage, which orients it itself, so JPEG frames come unflipped.
                FlipY = pixelFormat != Core.PixelFormat.Jpeg,
                AlphaMatte = alphaMatte,
                SendRig = sendRig,
                NpcSampleRate = (uint)npcSampleRate,
                MarginSeconds = presentationMargin,
            };
        }

        private void OnEnable()
        {
            if (connectOnEnable) Connect();
        }

        private void OnDisable() { Disconnect(); }

        private void OnApplicationQuit() { Disconnect(); }

        public void Connect()
        {
            _wantConnected = true;
            if (_connectLoop == null) _connectLoop = StartCoroutine(ConnectLoop());
        }

        public void Disconnect()
        {
            _wantConnected = false;
            if (_connectLoop != null) { StopCoroutine(_connectLoop); _connectLoop = null; }
            CloseCall();
        }

        private void CloseCall()
        {
            if (_call != null) { _call.Dispose(); _call = null; }
            if (Core != null) Core.OnDisconnected();
        }

        private IEnumerator ConnectLoop()
        {
            while (_wantConnected)
            {
                _call = new PerformCall(address, SidecarChannels.Lifetime);
                _call.OnFrame = OnFrameNetworkThread;
                Core.Connecting();  // SessionConfig first (with the resume token after a drop)
                while (!_call.Ended) yield return null;
                var status = _call.EndStatus;
                var failure = _call.Failure;
                CloseCall();
                _backoff.OnDisconnected(Time.realtimeSinceStartup);
                if (!_wantConnected) break;
                if (status != Grpc.Core.StatusCode.OK && !ReconnectBackoff.IsRetryable((int)status))
                {
                    RaiseError((int)status, failure != null ? failure.Message : status.ToString(), true);
                    break;  // a bad config or unknown character needs a fix, not a retry
                }
                yield return new WaitForSecondsRealtime((float)_backoff.NextDelay());
            }
            _connectLoop = null;
        }

        private void Send(ClientMsg msg)
        {
            if (_call != null) _call.Send(ProtoMapping.ToProto(msg));
        }

        private void OnFrameNetworkThread(V1.VideoFrame f)
        {
            Core.Frames.Add(f.Index, f.PtsUs, ProtoMapping.FromProto(f));
        }

        private void Update()
        {
            if (_call == null) return;
            V1.ServerMessage msg;
            while (_call != null && _call.Inbox.TryDequeue(out msg)) Handle(msg);
            if (Core.Running)
            {
                double dsp = AudioSettings.dspTime;
                Core.Tick(dsp);  // NPC chunks due within the push-ahead horizon
                FrameData frame;
                if (Core.Frames.TrySelect(Core.Clock.PresentedSessionTime(dsp), out frame) && FrameDue != null)
                    FrameDue(frame);
            }
        }

        private void Handle(V1.ServerMessage msg)
        {
            switch (msg.MsgCase)
            {
                case V1.ServerMessage.MsgOneofCase.Started:
                    Core.OnStarted(ProtoMapping.FromProto(msg.Started), AudioSettings.dspTime);
                    _backoff.OnConnected(Time.realtimeSinceStartup);
                    if (SessionStarted != null) SessionStarted(Core.Info);
                    break;
                case V1.ServerMessage.MsgOneofCase.Rig:
                    if (RigFrameReceived != null) RigFrameReceived(msg.Rig);
                    break;
                case V1.ServerMessage.MsgOneofCase.Event:
                    HandleEvent(msg.Event);
                    break;
                case V1.ServerMessage.MsgOneofCase.Stats:
                    LastStats = msg.Stats;
                    if (StatsReceived != null) StatsReceived(msg.Stats);
                    break;
                case V1.ServerMessage.MsgOneofCase.Direction:
                    if (DirectionApplied != null) DirectionApplied(msg.Direction);
                    break;
                case V1.ServerMessage.MsgOneofCase.Error:
                    RaiseError((int)msg.Error.Code, msg.Error.Message, msg.Error.Fatal);
                    break;
            }
        }

        private void HandleEvent(V1.Event e)
        {
            if (EventReceived != null) EventReceived(e);
            switch (e.Type)
            {
                case V1.Event.Types.Type.NpcSpeechStarted:
                    if (SpeechStarted != null) SpeechStarted(e.PtsUs);
                    onSpeechStarted.Invoke();
                    break;
                case V1.Event.Types.Type.NpcSpeechEnded:
                    if (SpeechEnded != null) SpeechEnded(e.PtsUs);
                    onSpeechEnded.Invoke();
                    break;
                case V1.Event.Types.Type.ServerDraining:
                    Core.OnDraining(e.Detail);  // the stream ends soon; ConnectLoop resumes elsewhere
                    break;
            }
        }

        private void RaiseError(int code, string message, bool fatal)
        {
            Debug.LogWarning("[lpm-npc] " + (fatal ? "fatal " : "") + "error " + code + ": " + message, this);
            if (ErrorReceived != null) ErrorReceived(code, message, fatal);
            onError.Invoke(message);
        }
    }
}
