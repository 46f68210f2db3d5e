using System;
using System.Collections.Generic;

namespace LpmNpc.Core
{
    /// <summary>
    /// One NPC line (a clip, or TTS audio that streams in) placed on the session clock. It hands out
    /// fixed-size NPC AudioChunks with explicit sample_index, each once its time is within the
    /// push-ahead horizon; the first chunk carries the line's text. Cancel() stops it (barge-in).
    /// </summary>
    public sealed class NpcLine
    {
        public readonly string Text;
        public readonly int SampleRate;
        /// <summary>Position of the first sample on the session clock, in samples at SampleRate.</summary>
        public readonly long StartIndex;
        public readonly int ChunkSamples;
        private readonly List<float> _samples = new List<float>();
        private int _sent;
        private bool _complete;

        public bool Cancelled { get; private set; }
        public int ChunksSent { get; private set; }

        public NpcLine(string text, int sampleRate, long startIndex, int chunkMs = 40)
        {
            if (sampleRate < 8000 || sampleRate > 96000) throw new ArgumentOutOfRangeException("sampleRate", "8000..96000 Hz");
            if (startIndex < 0) throw new ArgumentOutOfRangeException("startIndex");
            Text = text ?? "";
            SampleRate = sampleRate;
            StartIndex = startIndex;
            ChunkSamples = Math.Max(1, sampleRate * chunkMs / 1000);
        }

        public double StartSeconds { get { return (double)StartIndex / SampleRate; } }
        public int SamplesAvailable { get { return _samples.Count; } }
        public int SamplesSent { get { return _sent; } }
        public bool Complete { get { return _complete; } }
        public bool Finished { get { return Cancelled || (_complete && _sent >= _samples.Count); } }

        /// <summary>Session time at which the line ends (known once complete).</summary>
        public double EndSeconds { get { return (double)(StartIndex + _samples.Count) / SampleRate; } }

        public void Append(float[] mono)
        {
            if (_complete) throw new InvalidOperationException("the line is already complete");
            _samples.AddRange(mono);
        }

        public void MarkComplete() { _complete = true; }

        public void Cancel() { Cancelled = true; }

        /// <summary>Chunks whose start time (session seconds) is at or before `horizon`.</summary>
        public List<AudioChunkData> Due(double horizonSeconds)
        {
            var list = new List<AudioChunkData>();
            if (Cancelled) return list;
            while (_sent < _samples.Count)
            {
                double t = (double)(StartIndex + _sent) / SampleRate;
                if (t > horizonSeconds) break;
                int n = Math.Min(ChunkSamples, _samples.Count - _sent);
                if (n < ChunkSamples && !_complete) break;  // wait for the TTS to fill the chunk
                var pcm = new float[n];
                _samples.CopyTo(_sent, pcm, 0, n);
                list.Add(new AudioChunkData
                {
                    Channel = AudioChannel.Npc,
                    Pcm = Pcm.FloatToPcm16(pcm),
                    SampleRate = (uint)SampleRate,
                    NumChannels = 1,
                    SampleIndex = StartIndex + _sent,
                    Text = ChunksSent == 0 ? Text : "",
                });
                _sent += n;
                ChunksSent++;
            }
            return list;
        }
    }
}
