// NUnit tests of the engine-independent core. They use only the API common to NUnit 2.6 (Debian's
// nunit-console, run by tests/test_unity_bridge.py) and NUnit 3 (Unity Test Framework).
using System;
using System.Collections.Generic;
using LpmNpc.Core;
using NUnit.Framework;

namespace LpmNpc.Tests
{
    [TestFixture]
    public class PcmTests
    {
        [Test]
        public void FloatToPcm16IsLittleEndianClippedAndRounded()
        {
            var bytes = Pcm.FloatToPcm16(new[] { 0f, 1f, -1f, 2f, -2f, 0.5f, float.NaN });
            Assert.AreEqual(14, bytes.Length);
            Assert.AreEqual(new byte[] { 0, 0 }, new[] { bytes[0], bytes[1] });
            Assert.AreEqual(new byte[] { 0xFF, 0x7F }, new[] { bytes[2], bytes[3] });        // 32767
            Assert.AreEqual(new byte[] { 0x01, 0x80 }, new[] { bytes[4], bytes[5] });        // -32767
            Assert.AreEqual(new byte[] { 0xFF, 0x7F }, new[] { bytes[6], bytes[7] });        // clipped
            Assert.AreEqual(new byte[] { 0x00, 0x80 }, new[] { bytes[8], bytes[9] });        // -32768
            Assert.AreEqual(16384, bytes[10] | (bytes[11] << 8));                             // 0.5 -> 16383.5 -> 16384
            Assert.AreEqual(new byte[] { 0, 0 }, new[] { bytes[12], bytes[13] });
        }

        [Test]
        public void RoundTripWithinOneStep()
        {
            var rng = new Random(1);
            var x = new float[1000];
            for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
            var back = Pcm.Pcm16ToFloat(Pcm.FloatToPcm16(x));
            for (int i = 0; i < x.Length; i++) Assert.AreEqual(x[i], back[i], 1.0 / 32767);
        }

        [Test]
        public void DownmixAveragesInterleavedChannels()
        {
            var mono = Pcm.Downmix(new[] { 1f, 0f, 0.5f, 0.5f, -1f, 1f }, 2);
            Assert.AreEqual(new[] { 0.5f, 0.5f, 0f }, mono);
        }
    }

    [TestFixture]
    public class ResamplerTests
    {
        private static float[] Sine(double hz, int rate, int n, double amp = 0.5)
        {
            var x = new float[n];
            for (int i = 0; i < n; i++) x[i] = (float)(amp * Math.Sin(2 * Math.PI * hz * i / rate));
            return x;
        }

        private static float[] Concat(List<float[]> parts)
        {
            var all = new List<float>();
            foreach (var p in parts) all.AddRange(p);
            return all.ToArray();
        }

        private static double Rms(float[] x, int from, int to)
        {
            double s = 0;
            for (int i = from; i < to; i++) s += x[i] * x[i];
            return Math.Sqrt(s / (to - from));
        }

        [Test]
        public void OutputLengthFollowsTheRateExactly([Values(48000, 44100, 22050, 24000, 16000, 8000)] int inRate)
        {
            var r = new StreamingResampler(inRate, 16000);
            int n = inRate * 3 + 7;
            int got = r.Process(new float[n]).Length + r.Flush().Length;
            Assert.AreEqual((int)Math.Ceiling((double)n * 16000 / inRate), got);
        }

        [Test]
        public void ChunkedEqualsOneShot([Values(48000, 44100)] int inRate)
        {
            var x = Sine(440, inRate, inRate);
            var whole = new StreamingResampler(inRate, 16000);
            var a = Concat(new List<float[]> { whole.Process(x), whole.Flush() });
            var chunked = new StreamingResampler(inRate, 16000);
            var parts = new List<float[]>();
            var rng = new Random(7);
            int pos = 0;
            while (pos < x.Length)
            {
                int n = Math.Min(x.Length - pos, rng.Next(1, 2000));
                parts.Add(chunked.Process(x, pos, n));
                pos += n;
            }
            parts.Add(chunked.Flush());
            var b = Concat(parts);
            Assert.AreEqual(a.Length, b.Length);
            for (int i = 0; i < a.Length; i++) Assert.AreEqual(a[i], b[i], 1e-6);
        }

        [Test]
        public void KeepsInBandToneAndPhase()
        {
            var r = new StreamingResampler(48000, 16000);
            var y = Concat(new List<float[]> { r.Process(Sine(1000, 48000, 48000)), r.Flush() });
            var expected = Sine(1000, 16000, y.Length);
            Assert.AreEqual(0.5 / Math.Sqrt(2), Rms(y, 1000, 15000), 0.01);
            double err = 0;
            for (int i = 1000; i < 15000; i++) err = Math.Max(err, Math.Abs(y[i] - expected[i]));
            Assert.Less(err, 0.02, "no delay, no distortion");
        }

        [Test]
        public void RemovesToneAboveTheNewNyquist()
        {
            var r = new StreamingResampler(48000, 16000);
            var y = Concat(new List<float[]> { r.Process(Sine(11000, 48000, 48000)), r.Flush() });
            Assert.Less(Rms(y, 1000, 15000), 0.01, "11 kHz must not alias into the 16 kHz stream");
        }

        [Test]
        public void SameRateIsACopy()
        {
            var r = new StreamingResampler(16000, 16000);
            var x = Sine(300, 16000, 320);
            Assert.AreEqual(x, r.Process(x));
            Assert.AreEqual(0, r.Flush().Length);
        }
    }

    [TestFixture]
    public class MicrophoneTests
    {
        [Test]
        public void ReaderFollowsTheWriteHeadAcrossTheWrap()
        {
            // a 1 s looping clip at 48 kHz recorded for 3.3 s, polled at uneven frame times
            const int rate = 48000, clip = 48000;
            var ring = new float[clip];
            var reader = new MicRingReader(clip, rate);
            long written = 0;
            var got = new List<float>();
            var rng = new Random(3);
            reader.Restart(0);
            while (written < rate * 33 / 10)
            {
                int step = rng.Next(300, 1500);  // 6..31 ms between Updates
                for (int i = 0; i < step; i++) ring[(written + i) % clip] = (written + i) % 1000;
                written += step;
                int offset, count;
                if (reader.Advance((int)(written % clip), step / (double)rate, out offset, out count))
                    got.AddRange(MicRingReader.ReadWrapped(ring, 1, offset, count));
            }
            Assert.AreEqual(written, got.Count);
            for (int i = 0; i < got.Count; i++) Assert.AreEqual(i % 1000, got[i]);
            Assert.AreEqual(0, reader.Overruns);
        }

        [Test]
        public void AHitchLongerThanTheClipResynchronises()
        {
            var reader = new MicRingReader(16000, 16000);
            reader.Restart(0);
            int offset, count;
            Assert.IsFalse(reader.Advance(100, 1.5, out offset, out count));
            Assert.AreEqual(1, reader.Overruns);
            Assert.IsTrue(reader.Advance(420, 0.02, out offset, out count));
            Assert.AreEqual(100, offset);
            Assert.AreEqual(320, count);
        }

        [Test]
        public void PipelineMakes20msChunksOf16kMonoWithoutSampleIndex()
        {
            var p = new PlayerVoicePipeline(48000, 2, 20);
            var chunks = new List<AudioChunkData>();
            var stereo = new float[48000 * 2];  // 1 s of stereo at 48 kHz
            for (int i = 0; i < stereo.Length; i += 960) chunks.AddRange(p.Push(SubArray(stereo, i, Math.Min(960, stereo.Length - i))));
            chunks.AddRange(p.Flush());
            int total = 0;
            for (int i = 0; i < chunks.Count; i++)
            {
                var c = chunks[i];
                Assert.AreEqual(AudioChannel.Player, c.Channel);
                Assert.AreEqual(16000u, c.SampleRate);
                Assert.AreEqual(1u, c.NumChannels);
                Assert.IsFalse(c.SampleIndex.HasValue);
                if (i < chunks.Count - 1) Assert.AreEqual(640, c.Pcm.Length);
                total += c.Pcm.Length / 2;
            }
            Assert.AreEqual(16000, total);
        }

        [Test]
        public void ChunkLengthIsLimitedTo20To40ms()
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => new PlayerVoicePipeline(16000, 1, 10));
            Assert.AreEqual(640, new PlayerVoicePipeline(16000, 1, 40).ChunkSamples);
        }

        private static float[] SubArray(float[] a, int from, int n)
        {
            var r = new float[n];
            Array.Copy(a, from, r, 0, n);
            return r;
        }
    }
}
