using System;
using System.Collections.Generic;

namespace LpmNpc.Core
{
    /// <summary>Everything SessionConfig needs, with the bridge's defaults for a billboard NPC.</summary>
    [Serializable]
    public sealed class PerformerSettings
    {
        public string CharacterId = "default";
        public uint Size = 512;
        public uint Fps = 30;
        /// <summary>RGBA8 matches TextureFormat.RGBA32 byte for byte.</summary>
        public PixelFormat PixelFormat = PixelFormat.Rgba8;
        /// <summary>Unity textures store the bottom row first: flip_y makes LoadRawTextureData upright.</summary>
        public bool FlipY = true;
        public bool AlphaMatte = true;
        public bool SendRig;
        /// <summary>0 = server default (80 ms).</summary>
        public uint LookaheadMs;
        public uint StatsIntervalMs = 1000;
        /// <summary>Clock of VideoFrame.pts_samples; set it to your TTS rate.</summary>
        public uint NpcSampleRate = 24000;
        /// <summary>Jitter margin added to the lookahead before a frame/sample is presented.</summary>
        public double MarginSeconds = 0.06;
        /// <summary>A new line starts this long after it is requested (room to push its first chunk).</summary>
        public double LineStartLatency = 0.15;
        public int NpcChunkMs = 40;
    }

    /// <summary>
    /// The engine-independent brain of one NPC session: builds the config (with the resume token on
    /// reconnect), keeps the session clock, places NPC lines on it and pushes their chunks ahead of
    /// playback, forwards mic chunks, state and control, and buffers frames for the audio clock.
    /// Every outgoing message goes through the `send` callback, in order.
    /// </summary>
    public sealed class NpcSessionCore
    {
        public readonly PerformerSettings Settings;
        public readonly SessionClock Clock = new SessionClock();
        public readonly FrameJitterBuffer<FrameData> Frames = new FrameJitterBuffer<FrameData>();
        private readonly Action<ClientMsg> _send;
        private readonly List<NpcLine> _lines = new List<NpcLine>();

        public SessionInfo Info { get; private set; }
        public string ResumeToken { get; private set; }
        public uint CurrentSize { get; private set; }
        public uint CurrentFps { get; private set; }
        public bool Paused { get; private set; }

        public NpcSessionCore(PerformerSettings settings, Action<ClientMsg> send)
        {
            Settings = settings;
            _send = send;
            ResumeToken = "";
            CurrentSize = settings.Size;
            CurrentFps = LodPolicy.SnapFps(settings.Fps);
        }

        public bool Running { get { return Clock.Running; } }

        /// <summary>The first message of every (re)connection.</summary>
        public ClientMsg BuildConfig()
        {
            var s = Settings;
            return ClientMsg.Of(new SessionConfigData
            {
                CharacterId = string.IsNullOrEmpty(s.CharacterId) ? "default" : s.CharacterId,
                Fps = CurrentFps,
                Width = CurrentSize,
                Height = CurrentSize,
                PixelFormat = s.PixelFormat,
                FlipY = s.FlipY,
                AlphaMatte = s.AlphaMatte,
                LookaheadMs = s.LookaheadMs == 0 ? (uint?)null : s.LookaheadMs,
                SendRig = s.SendRig,
                StatsIntervalMs = s.StatsIntervalMs,
                NpcSampleRate = s.NpcSampleRate,
                ResumeToken = ResumeToken ?? "",
            });
        }

        public void Connecting() { _send(BuildConfig()); }

        public void OnStarted(SessionInfo info, double dsp)
        {
            Info = info;
            if (!string.IsNullOrEmpty(info.ResumeToken)) ResumeToken = info.ResumeToken;
            CurrentSize = info.Width;
            CurrentFps = info.Fps;
            Frames.Clear();
            Clock.Start(dsp, info.LookaheadMs, Settings.MarginSeconds);
            if (Paused) _send(ClientMsg.Pause());  // a reconnect keeps a hidden NPC paused
        }

        /// <summary>SERVER_DRAINING carries the token to resume with elsewhere.</summary>
        public void OnDraining(string detail)
        {
            var token = ReconnectBackoff.ResumeTokenFromDetail(detail);
            if (token != null) ResumeToken = token;
        }

        /// <summary>The stream ended: lines in flight are lost (the new session has a new clock).</summary>
        public void OnDisconnected()
        {
            Clock.Stop();
            foreach (var l in _lines) l.Cancel();
            _lines.Clear();
        }

        // -- player microphone ------------------------------------------------------------------

        public void SendMic(List<AudioChunkData> chunks)
        {
            if (!Running) return;  // audio recorded while disconnected is of no use later
            foreach (var c in chunks) _send(ClientMsg.Of(c));
        }

        // -- NPC voice --------------------------------------------------------------------------

        /// <summary>
        /// Place a line on the session clock: it starts LineStartLatency from now, or right after the
        /// line still playing. Append its samples (all at once for a clip, as they come for TTS),
        /// play it at LineStartDsp(line), and call Tick every frame.
        /// </summary>
        public NpcLine StartLine(string text, int sampleRate, double dspNow)
        {
            long index = Clock.PlanLineStart(dspNow, Settings.LineStartLatency, sampleRate);
            foreach (var l in _lines)
            {
                if (l.Cancelled || !l.Complete) continue;
                long after = (long)Math.Ceiling(l.EndSeconds * sampleRate);
                if (after > index) index = after;
            }
            var line = new NpcLine(text, sampleRate, index, Settings.NpcChunkMs);
            _lines.Add(line);
            return line;
        }

        public double LineStartDsp(NpcLine line) { return Clock.LineStartDsp(line.StartIndex, line.SampleRate); }

        /// <summary>Push every NPC chunk that is now within the push-ahead horizon.</summary>
        public void Tick(double dsp)
        {
            if (!Running) return;
            double horizon = Clock.SendHorizon(dsp);
            for (int i = 0; i < _lines.Count; i++)
                foreach (var chunk in _lines[i].Due(horizon)) _send(ClientMsg.Of(chunk));
            _lines.RemoveAll(l => l.Finished);
        }

        public bool Speaking { get { return _lines.Count > 0; } }

        /// <summary>Barge-in: stop sending the lines, then tell the server to flush what it queued.</summary>
        public void Interrupt()
        {
            foreach (var l in _lines) l.Cancel();
            _lines.Clear();
            if (Running) _send(ClientMsg.Interrupt());
        }

        // -- direction and control ----------------------------------------------------------------

        public void SetState(Phase phase, Emotion emotion, float intensity, uint transitionMs, string direction)
        {
            if (!Running) return;
            _send(ClientMsg.Of(new DialogueStateData
            {
                Phase = phase, Emotion = emotion, Intensity = Math.Max(0f, Math.Min(1f, intensity)),
                TransitionMs = transitionMs, Direction = direction ?? "",
            }));
        }

        /// <summary>Forward LOD decisions; remembers size/fps/pause for the next reconnect.</summary>
        public void Control(IEnumerable<ClientMsg> msgs)
        {
            foreach (var m in msgs)
            {
                if (m.Kind != ClientMsgKind.Control) continue;
                var c = m.Control;
                if (c.Action == ControlAction.Pause) Paused = true;
                else if (c.Action == ControlAction.Resume) Paused = false;
                else if (c.Action == ControlAction.SetOutput)
                {
                    if (c.Width != 0) CurrentSize = c.Width;
                    if (c.Fps != 0) CurrentFps = c.Fps;
                }
                if (Running) _send(m);
            }
        }
    }
}
