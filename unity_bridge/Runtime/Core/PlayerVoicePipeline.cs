using System;
using System.Collections.Generic;

namespace LpmNpc.Core
{
    /// <summary>
    /// Tracks how far a looping microphone clip has been read. Unity's Microphone writes into a
    /// looping AudioClip and reports its write head with Microphone.GetPosition; everything between
    /// the last read position and the write head (with wrap-around) is new audio.
    /// AudioClip.GetData(buffer, offset) itself wraps past the clip end, so one read per poll works.
    /// </summary>
    public sealed class MicRingReader
    {
        public readonly int ClipSamples;   // per channel
        public readonly int SampleRate;
        private int _last = -1;
        public long Overruns { get; private set; }
        public long TotalRead { get; private set; }

        public MicRingReader(int clipSamples, int sampleRate)
        {
            if (clipSamples <= 0) throw new ArgumentOutOfRangeException("clipSamples");
            ClipSamples = clipSamples;
            SampleRate = sampleRate;
        }

        /// <summary>Start reading from the current write head (drops what was recorded before).</summary>
        public void Restart(int writePosition) { _last = Mod(writePosition); }

        /// <summary>
        /// New samples since the last call: read `count` samples starting at `offset` (may wrap).
        /// `secondsSinceLastPoll` detects an overrun (the head lapped the reader: a hitch longer
        /// than the clip); then the reader resynchronises on the head and reports no data.
        /// </summary>
        public bool Advance(int writePosition, double secondsSinceLastPoll, out int offset, out int count)
        {
            offset = 0;
            count = 0;
            int pos = Mod(writePosition);
            if (_last < 0) { _last = pos; return false; }
            if (secondsSinceLastPoll * SampleRate >= ClipSamples - SampleRate / 50)
            {
                Overruns++;
                _last = pos;
                return false;
            }
            int available = Mod(pos - _last);
            if (available == 0) return false;
            offset = _last;
            count = available;
            _last = pos;
            TotalRead += available;
            return true;
        }

        private int Mod(int x) { int m = x % ClipSamples; return m < 0 ? m + ClipSamples : m; }

        /// <summary>Copy with AudioClip.GetData's wrap-around semantics (tests, tools).</summary>
        public static float[] ReadWrapped(float[] ring, int channels, int offset, int count)
        {
            int frames = ring.Length / channels;
            var dst = new float[count * channels];
            for (int i = 0; i < count; i++)
            {
                int src = (offset + i) % frames;
                for (int c = 0; c < channels; c++) dst[i * channels + c] = ring[src * channels + c];
            }
            return dst;
        }
    }

    /// <summary>Cuts a mono 16 kHz stream into fixed PCM16 chunks (20..40 ms).</summary>
    public sealed class PcmChunker
    {
        public readonly int ChunkSamples;
        private readonly float[] _pending;
        private int _count;

        public PcmChunker(int chunkSamples)
        {
            if (chunkSamples <= 0) throw new ArgumentOutOfRangeException("chunkSamples");
            ChunkSamples = chunkSamples;
            _pending = new float[chunkSamples];
        }

        public int Pending { get { return _count; } }

        public List<byte[]> Push(float[] samples)
        {
            var chunks = new List<byte[]>();
            int i = 0;
            while (i < samples.Length)
            {
                int n = Math.Min(ChunkSamples - _count, samples.Length - i);
                Array.Copy(samples, i, _pending, _count, n);
                _count += n;
                i += n;
                if (_count == ChunkSamples)
                {
                    chunks.Add(Pcm.FloatToPcm16(_pending, 0, ChunkSamples));
                    _count = 0;
                }
            }
            return chunks;
        }

        /// <summary>The partial chunk left (push-to-talk released), or null.</summary>
        public byte[] Flush()
        {
            if (_count == 0) return null;
            var bytes = Pcm.FloatToPcm16(_pending, 0, _count);
            _count = 0;
            return bytes;
        }

        public void Clear() { _count = 0; }
    }

    /// <summary>
    /// Microphone samples (any device rate, interleaved channels) -> 16 kHz mono PCM16 AudioChunks
    /// on the PLAYER channel, sent as recorded, without sample_index (appended, per the contract).
    /// </summary>
    public sealed class PlayerVoicePipeline
    {
        public const int TargetRate = 16000;
        public readonly int DeviceRate;
        public readonly int DeviceChannels;
        public readonly int ChunkMs;
        private readonly StreamingResampler _resampler;
        private readonly PcmChunker _chunker;

        public PlayerVoicePipeline(int deviceRate, int deviceChannels = 1, int chunkMs = 20)
        {
            if (chunkMs < 20 || chunkMs > 40) throw new ArgumentOutOfRangeException("chunkMs", "use 20..40 ms chunks");
            DeviceRate = deviceRate;
            DeviceChannels = Math.Max(1, deviceChannels);
            ChunkMs = chunkMs;
            _resampler = new StreamingResampler(deviceRate, TargetRate);
            _chunker = new PcmChunker(TargetRate * chunkMs / 1000);
        }

        public int ChunkSamples { get { return _chunker.ChunkSamples; } }

        public List<AudioChunkData> Push(float[] deviceSamples)
        {
            var mono = Pcm.Downmix(deviceSamples, DeviceChannels);
            return Wrap(_chunker.Push(_resampler.Process(mono)));
        }

        /// <summary>Push-to-talk released: send what is left (a shorter last chunk).</summary>
        public List<AudioChunkData> Flush()
        {
            var list = Wrap(_chunker.Push(_resampler.Flush()));
            var tail = _chunker.Flush();
            if (tail != null) list.Add(Chunk(tail));
            _resampler.Reset();
            return list;
        }

        private static List<AudioChunkData> Wrap(List<byte[]> chunks)
        {
            var list = new List<AudioChunkData>(chunks.Count);
            foreach (var c in chunks) list.Add(Chunk(c));
            return list;
        }

        private static AudioChunkData Chunk(byte[] pcm)
        {
            return new AudioChunkData { Channel = AudioChannel.Player, Pcm = pcm, SampleRate = TargetRate, NumChannels = 1 };
        }
    }
}
