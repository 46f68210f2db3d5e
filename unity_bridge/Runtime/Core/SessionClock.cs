using System;

namespace LpmNpc.Core
{
    /// <summary>
    /// Maps the session clock (pts 0 = when the server started the session) to the engine's audio
    /// clock (AudioSettings.dspTime in Unity).
    ///
    /// The server renders the frame of session time s at wall time t0 + s + lookahead, so a frame
    /// reaches the engine a little after `lookahead`. The bridge therefore *plays* the NPC audio of
    /// session time s at dsp = Origin + s + PresentationDelay (lookahead + a jitter margin) and shows,
    /// at every moment, the frame whose pts is the presented session time: sound and lips match.
    /// NPC audio for session time s is pushed PushAhead seconds before it plays (the contract's
    /// "~0.2 s ahead"); it reaches the server (PushAhead - margin) before the server needs it.
    /// </summary>
    public sealed class SessionClock
    {
        public double OriginDsp { get; private set; }
        public double PresentationDelay { get; private set; }
        public double PushAhead = 0.2;
        public bool Running { get; private set; }

        /// <summary>Call when SessionStarted arrives (the server's pts 0 is "now" give or take a ms).</summary>
        public void Start(double dspAtStarted, uint lookaheadMs, double marginSeconds)
        {
            if (marginSeconds < 0 || marginSeconds >= PushAhead)
                throw new ArgumentOutOfRangeException("marginSeconds", "the margin must be below PushAhead");
            OriginDsp = dspAtStarted;
            PresentationDelay = lookaheadMs / 1000.0 + marginSeconds;
            Running = true;
        }

        public void Stop() { Running = false; }

        /// <summary>The session time being heard/seen now.</summary>
        public double PresentedSessionTime(double dsp) { return dsp - OriginDsp - PresentationDelay; }

        /// <summary>The dsp time at which session time `s` is heard/seen.</summary>
        public double SessionToDsp(double s) { return OriginDsp + PresentationDelay + s; }

        /// <summary>NPC chunks up to this session time should be on the wire by now.</summary>
        public double SendHorizon(double dsp) { return PresentedSessionTime(dsp) + PushAhead; }

        /// <summary>
        /// Where a line that should start `startLatency` seconds from now goes on the session clock:
        /// its first sample index at `sampleRate`; the exact dsp start follows from it (sample accurate).
        /// </summary>
        public long PlanLineStart(double dspNow, double startLatency, int sampleRate)
        {
            if (!Running) throw new InvalidOperationException("the session has not started");
            double s = PresentedSessionTime(dspNow + startLatency);
            if (s < 0) s = 0;
            return (long)Math.Ceiling(s * sampleRate);
        }

        public double LineStartDsp(long startIndex, int sampleRate) { return SessionToDsp((double)startIndex / sampleRate); }
    }
}
