using System;

namespace LpmNpc.Core
{
    /// <summary>
    /// Exponential backoff with jitter for reconnecting the Perform stream, plus which gRPC status
    /// codes are worth retrying. A connection that stayed up for StableAfterSeconds resets it.
    /// </summary>
    public sealed class ReconnectBackoff
    {
        public double InitialSeconds = 0.25;
        public double MaxSeconds = 8.0;
        public double Factor = 2.0;
        public double Jitter = 0.2;             // +-20 %
        public double StableAfterSeconds = 10.0;
        private readonly Random _random;
        private double _connectedAt = -1;

        public int Attempt { get; private set; }

        public ReconnectBackoff(int seed = 0) { _random = seed == 0 ? new Random() : new Random(seed); }

        public double NextDelay()
        {
            double d = Math.Min(MaxSeconds, InitialSeconds * Math.Pow(Factor, Attempt));
            Attempt++;
            double j = 1.0 + Jitter * (2.0 * _random.NextDouble() - 1.0);
            return Math.Min(MaxSeconds, d * j);
        }

        public void OnConnected(double now) { _connectedAt = now; }

        public void OnDisconnected(double now)
        {
            if (_connectedAt >= 0 && now - _connectedAt >= StableAfterSeconds) Attempt = 0;
            _connectedAt = -1;
        }

        public void Reset() { Attempt = 0; }

        /// <summary>
        /// gRPC status codes after which reconnecting can help: CANCELLED by the server side (1),
        /// UNKNOWN (2), DEADLINE_EXCEEDED (4), RESOURCE_EXHAUSTED (8, capacity), ABORTED (10),
        /// INTERNAL (13), UNAVAILABLE (14, sidecar not up yet or draining). The rest (bad config,
        /// unknown character, ...) need a fix, not a retry.
        /// </summary>
        public static bool IsRetryable(int grpcStatus)
        {
            switch (grpcStatus)
            {
                case 1: case 2: case 4: case 8: case 10: case 13: case 14: return true;
                default: return false;
            }
        }

        /// <summary>The resume token in a SERVER_DRAINING event's detail ("resume_token=..."), or null.</summary>
        public static string ResumeTokenFromDetail(string detail)
        {
            const string key = "resume_token=";
            if (string.IsNullOrEmpty(detail)) return null;
            int i = detail.IndexOf(key, StringComparison.Ordinal);
            if (i < 0) return null;
            string rest = detail.Substring(i + key.Length);
            int end = rest.IndexOfAny(new[] { ' ', ',', ';' });
            string token = end < 0 ? rest : rest.Substring(0, end);
            return token.Length == 0 ? null : token;
        }
    }
}
