// Runs the bridge's engine-independent core through a scripted scene, frame by frame, exactly as the
// Unity components drive it, and writes every ClientMessage it emits (with its time) as JSON.
// tests/test_unity_bridge.py replays that plan against the real sidecar and checks what comes back.
//
//   mcs -out:plan.exe Tools~/SequencePlan/Program.cs Runtime/Core/*.cs
//   mono plan.exe player_48k.f32 npc_24k.f32 plan.json
//
// Not part of the Unity package (folders ending in ~ are ignored by Unity).
using System;
using System.Collections.Generic;
using System.IO;
using LpmNpc.Core;

namespace LpmNpc.Tools
{
    public static class SequencePlan
    {
        const int MicRate = 48000;      // a typical microphone device rate (resampled to 16 kHz)
        const int MicClipSeconds = 1;   // Microphone.Start(device, loop: true, lengthSec: 1, ...)
        const int NpcRate = 24000;      // a typical TTS rate
        const double UpdateHz = 60.0;
        const uint AssumedLookaheadMs = 80;  // the server default (SessionStarted.lookahead_ms)

        static float[] ReadF32(string path)
        {
            var bytes = File.ReadAllBytes(path);
            var x = new float[bytes.Length / 4];
            Buffer.BlockCopy(bytes, 0, x, 0, x.Length * 4);
            return x;
        }

        public static int Main(string[] args)
        {
            if (args.Length != 3)
            {
                Console.Error.WriteLine("usage: plan.exe player_48k.f32 npc_24k.f32 out.json");
                return 2;
            }
            var player = ReadF32(args[0]);
            var npc = ReadF32(args[1]);

            double now = 0;  // the audio clock (AudioSettings.dspTime - dsp at SessionStarted)
            var rec = new MessageRecorder { Clock = () => now };
            var marks = new Dictionary<string, double>();
            var settings = new PerformerSettings
            {
                CharacterId = "default", Size = 384, Fps = 30, PixelFormat = PixelFormat.Rgba8, FlipY = true,
                AlphaMatte = true, NpcSampleRate = NpcRate, StatsIntervalMs = 500,
            };
            var core = new NpcSessionCore(settings, rec.Add);
            var lod = new LodPolicy(new[] { new LodTier(4f, 384, 30), new LodTier(10f, 256, 15), new LodTier(float.MaxValue, 128, 10) });

            // -- NpcPerformer: connect, configure, SessionStarted ------------------------------------
            lod.Initial(2f);
            rec.NextNote = "config";
            core.Connecting();
            core.OnStarted(new SessionInfo { Fps = 30, Width = 384, Height = 384, LookaheadMs = AssumedLookaheadMs,
                                             NpcSampleRate = NpcRate, ResumeToken = "" }, 0.0);
            marks["presentation_delay"] = core.Clock.PresentationDelay;
            marks["assumed_lookahead_ms"] = AssumedLookaheadMs;

            // -- the world: the player talks into a 48 kHz microphone -------------------------------
            double pttDown = 0.3, speechAt = 0.5;
            double speechEnd = speechAt + player.Length / (double)MicRate;
            double pttUp = speechEnd + 0.3;
            var ring = new float[MicRate * MicClipSeconds];
            var reader = new MicRingReader(ring.Length, MicRate);
            var mic = new PlayerVoicePipeline(MicRate, 1, 20);
            long micWritten = 0;    // samples the device has written since Play (t = 0)
            bool talking = false;

            double line1Req = pttUp + 0.4;
            NpcLine line1 = null, line2 = null;
            double line2Req = -1, interruptAt = -1, lodAt = -1, hideAt = -1, showAt = -1, endAt = -1;
            float distance = 2f;
            bool visible = true;
            var rng = new Random(11);
            double lastPoll = 0;

            while (endAt < 0 || now < endAt)
            {
                now += 1.0 / UpdateHz * (0.75 + 0.5 * rng.NextDouble());  // uneven frame times
                // the microphone device writes into its looping clip
                long due = (long)(now * MicRate);
                for (; micWritten < due; micWritten++)
                {
                    double t = micWritten / (double)MicRate;
                    int k = (int)Math.Round((t - speechAt) * MicRate);
                    ring[micWritten % ring.Length] = k >= 0 && k < player.Length ? player[k] : 0f;
                }

                // -- PlayerVoiceCapture (push-to-talk) --
                if (!talking && now >= pttDown && now < pttUp)
                {
                    talking = true;
                    reader.Restart((int)(micWritten % ring.Length));
                    lastPoll = now;
                    rec.NextNote = "ptt-down";
                    core.SetState(Phase.Listening, Emotion.Unspecified, 0f, 0, "");
                    marks["ptt_down"] = now;
                }
                if (talking)
                {
                    int offset, count;
                    if (reader.Advance((int)(micWritten % ring.Length), now - lastPoll, out offset, out count))
                        core.SendMic(mic.Push(MicRingReader.ReadWrapped(ring, 1, offset, count)));
                    lastPoll = now;
                    if (now >= pttUp)
                    {
                        talking = false;
                        core.SendMic(mic.Flush());
                        rec.NextNote = "ptt-up";
                        core.SetState(Phase.Thinking, Emotion.Unspecified, 0f, 0, "");
                        marks["ptt_up"] = now;
                        marks["player_speech_start"] = speechAt;
                        marks["player_speech_end"] = speechEnd;
                    }
                }

                // -- NpcVoice: line 1 plays to the end --
                if (line1 == null && now >= line1Req)
                {
                    rec.NextNote = "line1-direction";
                    core.SetState(Phase.Speaking, Emotion.Happy, 0.8f, 300, "smiles, nods slowly");
                    line1 = core.StartLine("Bring me the map, and maybe the old brass compass by the window.", NpcRate, now);
                    line1.Append(npc);
                    line1.MarkComplete();
                    marks["line1_request"] = now;
                    marks["line1_dsp"] = core.LineStartDsp(line1);
                    marks["line1_start_s"] = line1.StartSeconds;
                    marks["line1_end_s"] = line1.EndSeconds;
                    line2Req = core.Clock.SessionToDsp(line1.EndSeconds) + 0.8;
                }
                // -- line 2 is interrupted by the player after 1 s of playback (barge-in) --
                if (line2 == null && line2Req > 0 && now >= line2Req)
                {
                    rec.NextNote = "line2-direction";
                    core.SetState(Phase.Speaking, Emotion.Neutral, 0f, 300, "");
                    line2 = core.StartLine("And another thing about that compass.", NpcRate, now);
                    line2.Append(npc);   // streamed TTS: not marked complete, the player cuts in first
                    marks["line2_start_s"] = line2.StartSeconds;
                    marks["line2_dsp"] = core.LineStartDsp(line2);
                    interruptAt = core.LineStartDsp(line2) + 1.0;
                }
                if (interruptAt > 0 && now >= interruptAt && !marks.ContainsKey("interrupt"))
                {
                    rec.NextNote = "interrupt";
                    core.Interrupt();  // NpcVoice: AudioSource.Stop + stop sending + ACTION_INTERRUPT
                    core.SetState(Phase.Listening, Emotion.Unspecified, 0f, 0, "");
                    marks["interrupt"] = now;
                    marks["interrupt_s"] = core.Clock.PresentedSessionTime(now);
                    lodAt = now + 1.0;
                }
                core.Tick(now);

                // -- NpcLevelOfDetail: the camera walks away, looks away, looks back --
                if (lodAt > 0 && now >= lodAt && distance < 6f)
                {
                    distance = 6f;
                    marks["lod"] = now;
                    hideAt = now + 1.5;
                }
                if (hideAt > 0 && now >= hideAt && showAt < 0) { visible = false; showAt = now + 1.6; }
                if (showAt > 0 && now >= showAt && !visible) { visible = true; endAt = now + 1.5; }
                var lodMsgs = lod.Update(distance, visible, now);
                foreach (var m in lodMsgs)
                {
                    rec.NextNote = m.Control.Action.ToString().ToLowerInvariant();
                    if (m.Control.Action == ControlAction.Pause) marks["pause"] = now;
                    if (m.Control.Action == ControlAction.Resume) marks["resume"] = now;
                    if (m.Control.Action == ControlAction.SetOutput) marks["set_output"] = now;
                    core.Control(new[] { m });
                }
            }
            marks["end"] = now;
            File.WriteAllText(args[2], PlanJson.Write(rec.Items, marks));
            Console.WriteLine("{0} messages, {1:F2} s", rec.Items.Count, now);
            return 0;
        }
    }
}
