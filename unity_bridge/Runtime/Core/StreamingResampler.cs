using System;
using System.Collections.Generic;

namespace LpmNpc.Core
{
    /// <summary>
    /// Streaming band-limited resampler (windowed sinc, Blackman window) for mono float audio.
    /// Positions are kept as exact rationals, so feeding a signal in chunks of any size gives the
    /// same output as feeding it at once, and the output never drifts against the input clock
    /// (with Flush, N input samples give ceil(N * out / in) outputs).
    /// Downsampling low-passes at 0.45 x the output rate (the microphone's 48 kHz -> 16 kHz).
    /// </summary>
    public sealed class StreamingResampler
    {
        public readonly int InRate;
        public readonly int OutRate;
        private readonly long _den;   // input position = _num / _den input samples
        private readonly long _step;  // per output sample, in 1/_den input samples
        private readonly int _half;   // filter half-width in input samples
        private readonly double _fc;  // cutoff in cycles per input sample
        private readonly List<float> _buf = new List<float>();
        private long _num;            // position of the next output sample, relative to _buf[0]
        private long _consumed;       // input samples dropped from the front of _buf so far

        public StreamingResampler(int inRate, int outRate, int zeroCrossings = 12)
        {
            if (inRate <= 0 || outRate <= 0) throw new ArgumentOutOfRangeException("inRate");
            InRate = inRate;
            OutRate = outRate;
            long g = Gcd(inRate, outRate);
            _den = outRate / g;
            _step = inRate / g;
            double ratio = Math.Min(1.0, (double)outRate / inRate);
            _fc = 0.5 * ratio * 0.9;
            _half = inRate == outRate ? 0 : (int)Math.Ceiling(zeroCrossings / (2.0 * _fc) / 2.0);
            Reset();
        }

        public bool IsPassthrough { get { return InRate == OutRate; } }

        public void Reset()
        {
            _buf.Clear();
            for (int i = 0; i < _half; i++) _buf.Add(0f);  // silent history before the first sample
            _num = _half * _den;
            _consumed = 0;
        }

        /// <summary>Feed input samples; returns every output sample that is now fully determined.</summary>
        public float[] Process(float[] input, int offset, int count)
        {
            if (IsPassthrough)
            {
                var copy = new float[count];
                Array.Copy(input, offset, copy, 0, count);
                return copy;
            }
            for (int i = 0; i < count; i++) _buf.Add(input[offset + i]);
            return Drain();
        }

        public float[] Process(float[] input) { return Process(input, 0, input.Length); }

        /// <summary>End of stream: pad with silence so the last input samples come out too.</summary>
        public float[] Flush()
        {
            if (IsPassthrough) return new float[0];
            long lastInput = _buf.Count - 1;  // index of the last real sample in _buf
            for (int i = 0; i < _half + 1; i++) _buf.Add(0f);
            var outList = new List<float>();
            while (_num < (lastInput + 1) * _den)
                outList.Add(Next());
            Compact();
            return outList.ToArray();
        }

        private float[] Drain()
        {
            var outList = new List<float>();
            // an output at position p needs input up to floor(p) + _half
            while (_num / _den + _half <= _buf.Count - 1)
                outList.Add(Next());
            Compact();
            return outList.ToArray();
        }

        private float Next()
        {
            long baseIdx = _num / _den;
            double frac = (double)(_num % _den) / _den;
            double acc = 0.0, wsum = 0.0;
            for (int k = -_half + 1; k <= _half; k++)
            {
                long idx = baseIdx + k;
                if (idx < 0 || idx >= _buf.Count) continue;
                double t = k - frac;  // distance from the output position, in input samples
                double w = Kernel(t);
                acc += w * _buf[(int)idx];
                wsum += w;
            }
            _num += _step;
            return (float)(wsum > 1e-9 ? acc / wsum : 0.0);
        }

        private double Kernel(double t)
        {
            double x = 2.0 * _fc * t;
            double sinc = Math.Abs(x) < 1e-12 ? 1.0 : Math.Sin(Math.PI * x) / (Math.PI * x);
            double n = (t + _half) / (2.0 * _half);  // 0..1 across the window
            if (n <= 0.0 || n >= 1.0) return 0.0;
            double win = 0.42 - 0.5 * Math.Cos(2 * Math.PI * n) + 0.08 * Math.Cos(4 * Math.PI * n);
            return sinc * win;
        }

        private void Compact()
        {
            long keepFrom = _num / _den - _half;
            if (keepFrom <= 0) return;
            int drop = (int)Math.Min(keepFrom, _buf.Count);
            _buf.RemoveRange(0, drop);
            _num -= drop * _den;
            _consumed += drop;
        }

        private static long Gcd(long a, long b)
        {
            while (b != 0) { long t = a % b; a = b; b = t; }
            return a;
        }
    }
}
