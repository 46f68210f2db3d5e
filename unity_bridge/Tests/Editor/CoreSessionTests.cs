using System;
using System.Collections.Generic;
using LpmNpc.Core;
using NUnit.Framework;

namespace LpmNpc.Tests
{
    [TestFixture]
    public class NpcLineAndClockTests
    {
        [Test]
        public void LineChunksCarryConsecutiveSampleIndicesAndTextOnlyFirst()
        {
            var line = new NpcLine("Bring me the map.", 24000, 48000, 40);
            line.Append(new float[24000]);
            line.MarkComplete();
            var chunks = line.Due(double.MaxValue);
            Assert.AreEqual(25, chunks.Count);  // 1 s in 40 ms chunks
            long expect = 48000;
            for (int i = 0; i < chunks.Count; i++)
            {
                Assert.AreEqual(AudioChannel.Npc, chunks[i].Channel);
                Assert.AreEqual(24000u, chunks[i].SampleRate);
                Assert.AreEqual(expect, chunks[i].SampleIndex.Value);
                Assert.AreEqual(i == 0 ? "Bring me the map." : "", chunks[i].Text);
                expect += chunks[i].Pcm.Length / 2;
            }
            Assert.AreEqual(48000 + 24000, expect);
            Assert.IsTrue(line.Finished);
        }

        [Test]
        public void ChunksGoOutOnlyWithinTheHorizonAndStreamingWaitsForFullChunks()
        {
            var line = new NpcLine("hi", 16000, 16000, 20);  // starts at session time 1.0 s
            line.Append(new float[800]);                      // 50 ms of TTS so far
            Assert.AreEqual(0, line.Due(0.99).Count);
            Assert.AreEqual(1, line.Due(1.0).Count);
            Assert.AreEqual(1, line.Due(1.05).Count);         // 1.02: one full chunk; the 10 ms rest waits
            Assert.AreEqual(0, line.Due(2.0).Count);
            line.MarkComplete();
            var tail = line.Due(2.0);
            Assert.AreEqual(1, tail.Count);
            Assert.AreEqual(320, tail[0].Pcm.Length);
            Assert.AreEqual(16000 + 640, tail[0].SampleIndex.Value);
        }

        [Test]
        public void CancelledLineSendsNothingMore()
        {
            var line = new NpcLine("x", 16000, 0, 20);
            line.Append(new float[16000]);
            Assert.AreEqual(5, line.Due(0.09).Count);
            line.Cancel();
            Assert.AreEqual(0, line.Due(10).Count);
            Assert.IsTrue(line.Finished);
        }

        [Test]
        public void ClockPlacesLinesSoAudioAndFramesShareTheSessionTime()
        {
            var clock = new SessionClock();
            clock.Start(100.0, 80, 0.06);
            Assert.AreEqual(0.14, clock.PresentationDelay, 1e-9);
            Assert.AreEqual(-0.14, clock.PresentedSessionTime(100.0), 1e-9);
            Assert.AreEqual(0.86, clock.PresentedSessionTime(101.0), 1e-9);
            long idx = clock.PlanLineStart(101.0, 0.1, 24000);
            Assert.AreEqual((long)Math.Ceiling(0.96 * 24000), idx);
            double startDsp = clock.LineStartDsp(idx, 24000);
            Assert.AreEqual(101.1, startDsp, 1.0 / 24000 + 1e-9);
            // at the moment the line is heard, the presented session time is the line's sample time
            Assert.AreEqual((double)idx / 24000, clock.PresentedSessionTime(startDsp), 1e-9);
            // the first chunk is already due when the line is planned (start latency < push-ahead)
            Assert.GreaterOrEqual(clock.SendHorizon(101.0), (double)idx / 24000);
        }

        [Test]
        public void PushedChunksReachTheServerBeforeItRendersThem()
        {
            // server renders session time s at t0 + s + lookahead; the bridge sends chunk s at the dsp
            // time where SendHorizon reaches s. With margin < push-ahead that is always earlier.
            var clock = new SessionClock();
            clock.Start(0.0, 80, 0.06);
            for (double s = 0.0; s < 5; s += 0.04)
            {
                double sendDsp = clock.OriginDsp + clock.PresentationDelay + s - clock.PushAhead;
                Assert.AreEqual(s, clock.SendHorizon(sendDsp), 1e-9);
                Assert.Less(sendDsp, clock.OriginDsp + s + 0.080 - 0.1 + 1e-9, "at least 100 ms of slack");
            }
            Assert.Throws<ArgumentOutOfRangeException>(() => clock.Start(0, 80, 0.25));
        }

        [Test]
        public void LineBeforeTheSessionClockStartsIsClampedToZero()
        {
            var clock = new SessionClock();
            clock.Start(5.0, 80, 0.06);
            Assert.AreEqual(0, clock.PlanLineStart(5.0, 0.0, 16000));
            Assert.Throws<InvalidOperationException>(() => new SessionClock().PlanLineStart(0, 0.1, 16000));
        }
    }

    [TestFixture]
    public class FrameJitterBufferTests
    {
        private static FrameData F(ulong i, int fps = 30)
        {
            return new FrameData { Index = i, PtsUs = (long)Math.Round(i * 1e6 / fps) };
        }

        private static void Add(FrameJitterBuffer<FrameData> b, FrameData f) { b.Add(f.Index, f.PtsUs, f); }

        [Test]
        public void PicksTheNewestFrameWhosePtsHasCome()
        {
            var b = new FrameJitterBuffer<FrameData>();
            for (ulong i = 0; i < 6; i++) Add(b, F(i));
            FrameData f;
            Assert.IsTrue(b.TrySelect(0.07, out f));  // pts 0, 33.3, 66.7 ms are due -> 2
            Assert.AreEqual(2ul, f.Index);
            Assert.AreEqual(2, b.Skipped);
            Assert.IsFalse(b.TrySelect(0.09, out f), "frame 3 (100 ms) is not due yet: keep showing 2");
            Assert.IsTrue(b.TrySelect(0.1001, out f));
            Assert.AreEqual(3ul, f.Index);
            Assert.AreEqual(2, b.Count);
        }

        [Test]
        public void OutOfOrderStaleAndDuplicateFramesAreHandled()
        {
            var b = new FrameJitterBuffer<FrameData>();
            Add(b, F(5)); Add(b, F(3)); Add(b, F(4)); Add(b, F(4));
            Assert.AreEqual(3, b.Count);
            FrameData f;
            Assert.IsTrue(b.TrySelect(4.5 / 30, out f));
            Assert.AreEqual(4ul, f.Index);
            Add(b, F(2));  // older than what is on screen: dropped
            Assert.AreEqual(1, b.Count);
        }

        [Test]
        public void BoundedAndResynchronisesWhenTheClocksDisagree()
        {
            var b = new FrameJitterBuffer<FrameData>(4);
            for (ulong i = 100; i < 110; i++) Add(b, F(i));
            Assert.AreEqual(4, b.Count);
            Assert.AreEqual(6, b.DroppedOverflow);
            FrameData f;
            Assert.IsTrue(b.TrySelect(0.0, out f), "frames 3 s ahead of the clock are shown, not hoarded");
            Assert.AreEqual(106ul, f.Index);
            Assert.AreEqual(1, b.Resyncs);
        }

        [Test]
        public void ClearStartsANewSession()
        {
            var b = new FrameJitterBuffer<FrameData>();
            Add(b, F(50));
            FrameData f;
            Assert.IsTrue(b.TrySelect(10, out f));
            b.Clear();
            Add(b, F(0));
            Assert.IsTrue(b.TrySelect(0.0, out f));
            Assert.AreEqual(0ul, f.Index);
        }
    }

    [TestFixture]
    public class ReconnectAndLodTests
    {
        [Test]
        public void BackoffGrowsCapsAndResetsAfterAStableConnection()
        {
            var b = new ReconnectBackoff(42) { Jitter = 0 };
            Assert.AreEqual(new[] { 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0 },
                new[] { b.NextDelay(), b.NextDelay(), b.NextDelay(), b.NextDelay(), b.NextDelay(), b.NextDelay(), b.NextDelay() });
            b.OnConnected(100);
            b.OnDisconnected(103);
            Assert.AreEqual(7, b.Attempt, "a short-lived connection keeps backing off");
            b.OnConnected(200);
            b.OnDisconnected(215);
            Assert.AreEqual(0.25, b.NextDelay());
        }

        [Test]
        public void JitterStaysWithinBounds()
        {
            var b = new ReconnectBackoff(1);
            for (int i = 0; i < 50; i++)
            {
                double d = b.NextDelay();
                double nominal = Math.Min(8.0, 0.25 * Math.Pow(2, i));
                Assert.GreaterOrEqual(d, nominal * 0.8 - 1e-9);
                Assert.LessOrEqual(d, Math.Min(8.0, nominal * 1.2) + 1e-9);
            }
        }

        [Test]
        public void OnlyTransientStatusCodesAreRetried()
        {
            Assert.IsTrue(ReconnectBackoff.IsRetryable(14));   // UNAVAILABLE
            Assert.IsTrue(ReconnectBackoff.IsRetryable(8));    // RESOURCE_EXHAUSTED
            Assert.IsFalse(ReconnectBackoff.IsRetryable(3));   // INVALID_ARGUMENT
            Assert.IsFalse(ReconnectBackoff.IsRetryable(5));   // NOT_FOUND
            Assert.IsFalse(ReconnectBackoff.IsRetryable(9));   // FAILED_PRECONDITION
            Assert.AreEqual("abc123", ReconnectBackoff.ResumeTokenFromDetail("resume_token=abc123"));
            Assert.IsNull(ReconnectBackoff.ResumeTokenFromDetail("draining"));
        }

        [Test]
        public void FpsSnapsToTheSupportedSet()
        {
            Assert.AreEqual(15u, LodPolicy.SnapFps(14));
            Assert.AreEqual(30u, LodPolicy.SnapFps(29));
            Assert.AreEqual(60u, LodPolicy.SnapFps(120));
            Assert.AreEqual(10u, LodPolicy.SnapFps(1));
        }

        [Test]
        public void DistanceChangesTierWithHysteresis()
        {
            var lod = new LodPolicy(LodPolicy.DefaultTiers());
            Assert.AreEqual(512u, lod.Initial(2f).Size);
            Assert.AreEqual(0, lod.Update(4.3f, true, 0).Count, "inside the hysteresis band");
            var m = lod.Update(4.6f, true, 0.1);
            Assert.AreEqual(1, m.Count);
            Assert.AreEqual(ControlAction.SetOutput, m[0].Control.Action);
            Assert.AreEqual(256u, m[0].Control.Width);
            Assert.AreEqual(256u, m[0].Control.Height);
            Assert.AreEqual(15u, m[0].Control.Fps);
            Assert.AreEqual(0, lod.Update(3.8f, true, 0.2).Count);
            Assert.AreEqual(512u, lod.Update(3.4f, true, 0.3)[0].Control.Width);
            Assert.AreEqual(128u, lod.Update(50f, true, 0.4)[0].Control.Width);
        }

        [Test]
        public void InvisibleNpcIsPausedAfterADelayAndResumedWhenSeen()
        {
            var lod = new LodPolicy(LodPolicy.DefaultTiers());
            lod.Initial(2f);
            Assert.AreEqual(0, lod.Update(2f, false, 10.0).Count);
            Assert.AreEqual(0, lod.Update(2f, false, 10.3).Count);
            var p = lod.Update(2f, false, 10.5);
            Assert.AreEqual(ControlAction.Pause, p[0].Control.Action);
            Assert.AreEqual(0, lod.Update(2f, false, 11.0).Count, "paused once");
            var r = lod.Update(2f, true, 12.0);
            Assert.AreEqual(ControlAction.Resume, r[0].Control.Action);
        }
    }

    [TestFixture]
    public class SessionCoreTests
    {
        private List<ClientMsg> _sent;
        private NpcSessionCore _core;

        [SetUp]
        public void SetUp()
        {
            _sent = new List<ClientMsg>();
            _core = new NpcSessionCore(new PerformerSettings { Size = 384, NpcSampleRate = 24000 }, m => _sent.Add(m));
        }

        private static SessionInfo Started(string token = "tok-1")
        {
            return new SessionInfo { SessionId = token, ResumeToken = token, Fps = 30, Width = 384, Height = 384, LookaheadMs = 80 };
        }

        [Test]
        public void ConfigIsFirstAndUsesBillboardDefaults()
        {
            _core.Connecting();
            var c = _sent[0].Config;
            Assert.AreEqual(ClientMsgKind.Config, _sent[0].Kind);
            Assert.AreEqual("default", c.CharacterId);
            Assert.AreEqual(384u, c.Width);
            Assert.AreEqual(384u, c.Height);
            Assert.AreEqual(30u, c.Fps);
            Assert.AreEqual(PixelFormat.Rgba8, c.PixelFormat);
            Assert.IsTrue(c.FlipY);
            Assert.IsTrue(c.AlphaMatte);
            Assert.IsFalse(c.LookaheadMs.HasValue, "absent = server default");
            Assert.AreEqual("", c.ResumeToken);
        }

        [Test]
        public void ReconnectResumesWithTheTokenAndCurrentLod()
        {
            _core.Connecting();
            _core.OnStarted(Started(), 0);
            _core.Control(new[] { ClientMsg.SetOutput(256, 256, 15) });
            _core.OnDraining("resume_token=tok-2");
            _core.OnDisconnected();
            _sent.Clear();
            _core.Connecting();
            Assert.AreEqual("tok-2", _sent[0].Config.ResumeToken);
            Assert.AreEqual(256u, _sent[0].Config.Width);
            Assert.AreEqual(15u, _sent[0].Config.Fps);
        }

        [Test]
        public void NothingButConfigIsSentBeforeTheSessionStarts()
        {
            _core.SendMic(new List<AudioChunkData> { new AudioChunkData { Pcm = new byte[640] } });
            _core.SetState(Phase.Listening, Emotion.Unspecified, 0, 0, "");
            _core.Interrupt();
            Assert.AreEqual(0, _sent.Count);
        }

        [Test]
        public void LinesArePushedAheadOfPlaybackAndInterruptStopsThem()
        {
            _core.Connecting();
            _core.OnStarted(Started(), 50.0);
            _sent.Clear();
            var line = _core.StartLine("Hello there.", 24000, 51.0);
            line.Append(new float[24000 * 2]);
            line.MarkComplete();
            double start = _core.LineStartDsp(line);
            Assert.AreEqual(51.15, start, 1e-4);
            for (double dsp = 51.0; dsp < 52.0; dsp += 1.0 / 60)
            {
                _core.Tick(dsp);
                foreach (var m in _sent)
                {
                    double chunkDsp = _core.Clock.SessionToDsp((double)m.Audio.SampleIndex.Value / 24000);
                    Assert.LessOrEqual(chunkDsp - dsp, 0.2 + 1e-9, "never more than push-ahead early");
                    // the server renders session time s at Origin + s + lookahead (80 ms): every chunk
                    // must be there well before (the first ones go out at once, the rest 0.2 s ahead)
                    double serverNeedsAt = _core.Clock.OriginDsp + (double)m.Audio.SampleIndex.Value / 24000 + 0.080;
                    Assert.Less(dsp, serverNeedsAt - 0.08, "never late at the server");
                }
                _sent.Clear();
            }
            _core.Interrupt();
            Assert.AreEqual(1, _sent.Count);
            Assert.AreEqual(ControlAction.Interrupt, _sent[0].Control.Action);
            _core.Tick(60.0);
            Assert.AreEqual(1, _sent.Count, "no chunk of the interrupted line follows the interrupt");
            Assert.IsFalse(_core.Speaking);
        }

        [Test]
        public void ASecondLineQueuesAfterTheFirst()
        {
            _core.OnStarted(Started(), 0);
            var a = _core.StartLine("a", 24000, 1.0);
            a.Append(new float[24000]);
            a.MarkComplete();
            var b = _core.StartLine("b", 24000, 1.2);
            Assert.AreEqual(a.StartIndex + 24000, b.StartIndex);
        }

        [Test]
        public void StateIsClampedAndPlanJsonIsWellFormed()
        {
            var rec = new MessageRecorder();
            var core = new NpcSessionCore(new PerformerSettings(), rec.Add);
            core.Connecting();
            core.OnStarted(Started(), 0);
            core.SetState(Phase.Speaking, Emotion.Happy, 1.7f, 300, "nods \"slowly\"\n");
            Assert.AreEqual(1f, rec.Items[1].Msg.State.Intensity);
            var json = PlanJson.Write(rec.Items, new Dictionary<string, double> { { "x", 1.5 } });
            StringAssert.Contains("\"direction\": \"nods \\\"slowly\\\"\\n\"", json);
            StringAssert.Contains("\"marks\": {\"x\": 1.5}", json);
            StringAssert.DoesNotContain("lookahead_ms", json);
        }
    }
}
