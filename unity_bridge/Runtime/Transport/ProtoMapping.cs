// Plain core records <-> generated protobuf classes (Runtime/Generated/LpmNpc.cs).
using System.Linq;
using Google.Protobuf;
using LpmNpc.Core;
using V1 = LpmNpc.V1;

namespace LpmNpc.Unity
{
    public static class ProtoMapping
    {
        public static V1.ClientMessage ToProto(ClientMsg m)
        {
            var msg = new V1.ClientMessage();
            switch (m.Kind)
            {
                case ClientMsgKind.Config:
                {
                    var c = m.Config;
                    var cfg = new V1.SessionConfig
                    {
                        CharacterId = c.CharacterId ?? "",
                        Fps = c.Fps,
                        Width = c.Width,
                        Height = c.Height,
                        PixelFormat = (V1.PixelFormat)(int)c.PixelFormat,
                        FlipY = c.FlipY,
                        AlphaMatte = c.AlphaMatte,
                        JpegQuality = c.JpegQuality,
                        SendRig = c.SendRig,
                        StatsIntervalMs = c.StatsIntervalMs,
                        NpcSampleRate = c.NpcSampleRate,
                        ResumeToken = c.ResumeToken ?? "",
                    };
                    if (c.LookaheadMs.HasValue) cfg.LookaheadMs = c.LookaheadMs.Value;  // optional: set = present
                    msg.Config = cfg;
                    break;
                }
                case ClientMsgKind.Audio:
                {
                    var a = m.Audio;
                    var chunk = new V1.AudioChunk
                    {
                        Channel = (V1.AudioChannel)(int)a.Channel,
                        Pcm = ByteString.CopyFrom(a.Pcm),
                        SampleRate = a.SampleRate,
                        NumChannels = a.NumChannels,
                        Text = a.Text ?? "",
                    };
                    if (a.SampleIndex.HasValue) chunk.SampleIndex = a.SampleIndex.Value;
                    msg.Audio = chunk;
                    break;
                }
                case ClientMsgKind.State:
                {
                    var s = m.State;
                    msg.State = new V1.DialogueState
                    {
                        Phase = (V1.Phase)(int)s.Phase,
                        Emotion = (V1.Emotion)(int)s.Emotion,
                        Intensity = s.Intensity,
                        TransitionMs = s.TransitionMs,
                        Direction = s.Direction ?? "",
                    };
                    break;
                }
                default:
                {
                    var c = m.Control;
                    msg.Control = new V1.Control
                    {
                        Action = (V1.Control.Types.Action)(int)c.Action,
                        Width = c.Width,
                        Height = c.Height,
                        Fps = c.Fps,
                    };
                    break;
                }
            }
            return msg;
        }

        public static SessionInfo FromProto(V1.SessionStarted s)
        {
            return new SessionInfo
            {
                SessionId = s.SessionId,
                CharacterId = s.CharacterId,
                Fps = s.Fps,
                Width = s.Width,
                Height = s.Height,
                PixelFormat = (Core.PixelFormat)(int)s.PixelFormat,
                LookaheadMs = s.LookaheadMs,
                NpcSampleRate = s.NpcSampleRate,
                ResumeToken = s.ResumeToken,
                RigChannelNames = s.RigChannelNames.ToArray(),
                ServerVersion = s.ServerVersion,
            };
        }

        public static FrameData FromProto(V1.VideoFrame f)
        {
            return new FrameData
            {
                Index = f.Index,
                PtsUs = f.PtsUs,
                PtsSamples = f.PtsSamples,
                Width = (int)f.Width,
                Height = (int)f.Height,
                Stride = (int)f.Stride,
                Format = (Core.PixelFormat)(int)f.Format,
                FlipY = f.FlipY,
                Data = f.Data.ToByteArray(),
            };
        }
    }
}
