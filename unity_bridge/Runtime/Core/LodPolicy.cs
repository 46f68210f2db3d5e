using System;
using System.Collections.Generic;

namespace LpmNpc.Core
{
    [Serializable]
    public struct LodTier
    {
        public float MaxDistance;  // this tier applies up to this camera distance (metres)
        public uint Size;          // width = height
        public uint Fps;

        public LodTier(float maxDistance, uint size, uint fps) { MaxDistance = maxDistance; Size = size; Fps = fps; }
    }

    /// <summary>
    /// Level of detail through Control messages: distance picks a tier (size/fps) with hysteresis,
    /// and an NPC that stays invisible for HideDelaySeconds is paused, then resumed when seen again.
    /// </summary>
    public sealed class LodPolicy
    {
        public static readonly uint[] SupportedFps = { 10, 12, 15, 20, 24, 25, 30, 60 };

        public readonly LodTier[] Tiers;
        public float HysteresisMetres = 0.5f;
        public double HideDelaySeconds = 0.5;
        public int CurrentTier { get; private set; }
        public bool Paused { get; private set; }
        private double _invisibleSince = -1;

        public LodPolicy(LodTier[] tiers)
        {
            if (tiers == null || tiers.Length == 0) throw new ArgumentException("at least one tier", "tiers");
            Tiers = (LodTier[])tiers.Clone();
            Array.Sort(Tiers, (a, b) => a.MaxDistance.CompareTo(b.MaxDistance));
            for (int i = 0; i < Tiers.Length; i++)
            {
                Tiers[i].Fps = SnapFps(Tiers[i].Fps);
                Tiers[i].Size = Math.Max(16u, Math.Min(1024u, Tiers[i].Size));
            }
            CurrentTier = 0;
        }

        public static LodTier[] DefaultTiers()
        {
            return new[] { new LodTier(4f, 512, 30), new LodTier(10f, 256, 15), new LodTier(float.MaxValue, 128, 10) };
        }

        /// <summary>The nearest fps the server supports.</summary>
        public static uint SnapFps(uint fps)
        {
            uint best = SupportedFps[0];
            foreach (var f in SupportedFps)
                if (Math.Abs((int)f - (int)fps) < Math.Abs((int)best - (int)fps)) best = f;
            return best;
        }

        public int TierFor(float distance)
        {
            for (int i = 0; i < Tiers.Length; i++)
                if (distance <= Tiers[i].MaxDistance) return i;
            return Tiers.Length - 1;
        }

        /// <summary>The tier to configure the session with (no messages).</summary>
        public LodTier Initial(float distance)
        {
            CurrentTier = TierFor(distance);
            Paused = false;
            _invisibleSince = -1;
            return Tiers[CurrentTier];
        }

        /// <summary>Messages to send for this frame's distance/visibility (usually none).</summary>
        public List<ClientMsg> Update(float distance, bool visible, double now)
        {
            var msgs = new List<ClientMsg>();
            if (!visible)
            {
                if (_invisibleSince < 0) _invisibleSince = now;
                if (!Paused && now - _invisibleSince >= HideDelaySeconds)
                {
                    Paused = true;
                    msgs.Add(ClientMsg.Pause());
                }
                return msgs;
            }
            _invisibleSince = -1;
            if (Paused)
            {
                Paused = false;
                msgs.Add(ClientMsg.Resume());
            }
            int want = TierFor(distance);
            if (want != CurrentTier)
            {
                // hysteresis: only switch once past the boundary by HysteresisMetres
                bool farther = want > CurrentTier;
                float boundary = farther ? Tiers[CurrentTier].MaxDistance : Tiers[want].MaxDistance;
                bool past = farther ? distance > boundary + HysteresisMetres : distance < boundary - HysteresisMetres;
                if (past)
                {
                    CurrentTier = want;
                    var t = Tiers[want];
                    msgs.Add(ClientMsg.SetOutput(t.Size, t.Size, t.Fps));
                }
            }
            return msgs;
        }
    }
}
