using System;

namespace LpmNpc.Core
{
    /// <summary>Float (-1..1, Unity's AudioClip format) to signed 16-bit little-endian PCM and back.</summary>
    public static class Pcm
    {
        /// <summary>Encode `count` floats from `samples[offset..]` as s16le; clips to -1..1, rounds to nearest.</summary>
        public static byte[] FloatToPcm16(float[] samples, int offset, int count)
        {
            if (samples == null) throw new ArgumentNullException("samples");
            if (offset < 0 || count < 0 || offset + count > samples.Length) throw new ArgumentOutOfRangeException("count");
            var bytes = new byte[count * 2];
            for (int i = 0; i < count; i++)
            {
                short s = FloatToShort(samples[offset + i]);
                bytes[2 * i] = (byte)(s & 0xFF);          // little-endian on every host
                bytes[2 * i + 1] = (byte)((s >> 8) & 0xFF);
            }
            return bytes;
        }

        public static byte[] FloatToPcm16(float[] samples) { return FloatToPcm16(samples, 0, samples.Length); }

        public static short FloatToShort(float x)
        {
            if (float.IsNaN(x)) return 0;
            double v = Math.Round(x * 32767.0);
            if (v > 32767.0) v = 32767.0;
            if (v < -32768.0) v = -32768.0;
            return (short)v;
        }

        public static float[] Pcm16ToFloat(byte[] pcm)
        {
            if (pcm.Length % 2 != 0) throw new ArgumentException("PCM16 data has an odd number of bytes", "pcm");
            var result = new float[pcm.Length / 2];
            for (int i = 0; i < result.Length; i++)
                result[i] = (short)(pcm[2 * i] | (pcm[2 * i + 1] << 8)) / 32767f;
            return result;
        }

        /// <summary>Average interleaved channels into mono (Unity clips are interleaved).</summary>
        public static float[] Downmix(float[] interleaved, int channels)
        {
            if (channels <= 1) return interleaved;
            int frames = interleaved.Length / channels;
            var mono = new float[frames];
            for (int f = 0; f < frames; f++)
            {
                float sum = 0f;
                for (int c = 0; c < channels; c++) sum += interleaved[f * channels + c];
                mono[f] = sum / channels;
            }
            return mono;
        }
    }
}
