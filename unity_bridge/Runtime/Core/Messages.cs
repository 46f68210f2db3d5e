// Plain C# mirrors of the lpm_npc.v1 client messages. The engine-independent core builds these;
// the Runtime assembly maps them 1:1 onto the generated protobuf classes (ProtoMapping.cs).
// Enum values are the proto numbers, so a cast is the whole mapping.
using System;
using System.Collections.Generic;

namespace LpmNpc.Core
{
    public enum PixelFormat { Unspecified = 0, Rgba8 = 1, Bgra8 = 2, Jpeg = 3 }

    public enum AudioChannel { Unspecified = 0, Player = 1, Npc = 2 }

    public enum Phase { Unspecified = 0, Idle = 1, Listening = 2, Thinking = 3, Speaking = 4 }

    public enum Emotion
    {
        Unspecified = 0, Neutral = 1, Happy = 2, Sad = 3, Angry = 4, Surprised = 5, Afraid = 6, Disgusted = 7
    }

    public enum ControlAction { Unspecified = 0, Interrupt = 1, Pause = 2, Resume = 3, SetOutput = 4 }

    public enum EventType
    {
        Unspecified = 0, NpcSpeechStarted = 1, NpcSpeechEnded = 2, PlayerSpeechStarted = 3,
        PlayerSpeechEnded = 4, Interrupted = 5, Backchannel = 6, AudioLate = 7, Paused = 8, Resumed = 9,
        OutputChanged = 10, ServerDraining = 11
    }

    public enum ClientMsgKind { Config = 1, Audio = 2, State = 3, Control = 4 }

    /// <summary>SessionConfig. Zero values mean "server default", exactly as in the proto.</summary>
    public sealed class SessionConfigData
    {
        public string CharacterId = "default";
        public uint Fps;
        public uint Width;
        public uint Height;
        public PixelFormat PixelFormat = PixelFormat.Rgba8;
        public bool FlipY;
        public bool AlphaMatte;
        public uint JpegQuality;
        /// <summary>Null = absent = server default (the field is `optional` in the proto).</summary>
        public uint? LookaheadMs;
        public bool SendRig;
        public uint StatsIntervalMs;
        public uint NpcSampleRate;
        public string ResumeToken = "";

        public SessionConfigData Clone() { return (SessionConfigData)MemberwiseClone(); }
    }

    public sealed class AudioChunkData
    {
        public AudioChannel Channel;
        public byte[] Pcm;          // s16le
        public uint SampleRate;
        public uint NumChannels = 1;
        /// <summary>Null = absent: appended after the previous chunk (mic audio).</summary>
        public long? SampleIndex;
        public string Text = "";
    }

    public sealed class DialogueStateData
    {
        public Phase Phase;
        public Emotion Emotion;
        public float Intensity;
        public uint TransitionMs;
        public string Direction = "";
    }

    public sealed class ControlData
    {
        public ControlAction Action;
        public uint Width;
        public uint Height;
        public uint Fps;
    }

    /// <summary>One ClientMessage: exactly one of the four payloads is set (the oneof).</summary>
    public sealed class ClientMsg
    {
        public ClientMsgKind Kind;
        public SessionConfigData Config;
        public AudioChunkData Audio;
        public DialogueStateData State;
        public ControlData Control;

        public static ClientMsg Of(SessionConfigData c) { return new ClientMsg { Kind = ClientMsgKind.Config, Config = c }; }
        public static ClientMsg Of(AudioChunkData a) { return new ClientMsg { Kind = ClientMsgKind.Audio, Audio = a }; }
        public static ClientMsg Of(DialogueStateData s) { return new ClientMsg { Kind = ClientMsgKind.State, State = s }; }
        public static ClientMsg Of(ControlData c) { return new ClientMsg { Kind = ClientMsgKind.Control, Control = c }; }

        public static ClientMsg Interrupt() { return Of(new ControlData { Action = ControlAction.Interrupt }); }
        public static ClientMsg Pause() { return Of(new ControlData { Action = ControlAction.Pause }); }
        public static ClientMsg Resume() { return Of(new ControlData { Action = ControlAction.Resume }); }

        public static ClientMsg SetOutput(uint width, uint height, uint fps)
        {
            return Of(new ControlData { Action = ControlAction.SetOutput, Width = width, Height = height, Fps = fps });
        }

        public override string ToString()
        {
            switch (Kind)
            {
                case ClientMsgKind.Config: return "config(" + Config.Width + "x" + Config.Height + "@" + Config.Fps + ")";
                case ClientMsgKind.Audio:
                    return "audio(" + Audio.Channel + ", " + Audio.Pcm.Length / 2 + " samples @" + Audio.SampleRate +
                           (Audio.SampleIndex.HasValue ? ", index " + Audio.SampleIndex.Value : "") + ")";
                case ClientMsgKind.State: return "state(" + State.Phase + ", " + State.Emotion + ")";
                default: return "control(" + Control.Action + ")";
            }
        }
    }

    /// <summary>What SessionStarted told us, in plain types.</summary>
    public sealed class SessionInfo
    {
        public string SessionId = "";
        public string CharacterId = "";
        public uint Fps;
        public uint Width;
        public uint Height;
        public PixelFormat PixelFormat;
        public uint LookaheadMs;
        public uint NpcSampleRate;
        public string ResumeToken = "";
        public string[] RigChannelNames = new string[0];
        public string ServerVersion = "";
    }

    /// <summary>A client message with the time (seconds on the bridge clock) at which it was produced.</summary>
    public struct PlannedMsg
    {
        public double At;
        public ClientMsg Msg;
        public string Note;
    }

    /// <summary>Records every message the core emits, in order (tests and the sequence plan).</summary>
    public sealed class MessageRecorder
    {
        public readonly List<PlannedMsg> Items = new List<PlannedMsg>();
        public Func<double> Clock = () => 0.0;
        public string NextNote;

        public void Add(ClientMsg msg)
        {
            Items.Add(new PlannedMsg { At = Clock(), Msg = msg, Note = NextNote });
            NextNote = null;
        }
    }
}
