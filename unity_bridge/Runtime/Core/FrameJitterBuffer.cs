using System;
using System.Collections.Generic;

namespace LpmNpc.Core
{
    /// <summary>A received video frame in plain types (bytes are owned by the frame).</summary>
    public sealed class FrameData
    {
        public ulong Index;
        public long PtsUs;
        public long PtsSamples;
        public int Width;
        public int Height;
        public int Stride;
        public PixelFormat Format;
        public bool FlipY;
        public byte[] Data;

        public double PtsSeconds { get { return PtsUs / 1e6; } }
    }

    /// <summary>
    /// Holds the few frames that arrive ahead of their presentation time and picks, for the audio
    /// clock's current session time, the newest frame whose pts has come. Thread-safe: the network
    /// thread adds, the main thread selects. Bounded: a full buffer drops its oldest frame.
    /// </summary>
    public sealed class FrameJitterBuffer<T> where T : class
    {
        private struct Entry
        {
            public ulong Index;
            public long PtsUs;
            public T Frame;
        }

        private readonly object _lock = new object();
        private readonly List<Entry> _entries = new List<Entry>();
        private readonly int _capacity;
        private bool _shownAny;
        private ulong _lastShown;

        /// <summary>Frames far in the future (more than this) are shown anyway: the clocks disagree.</summary>
        public double ResyncSeconds = 1.0;

        public long DroppedOverflow { get; private set; }
        public long Skipped { get; private set; }     // superseded before their turn came
        public long Shown { get; private set; }
        public long Resyncs { get; private set; }

        public FrameJitterBuffer(int capacity = 16)
        {
            if (capacity < 1) throw new ArgumentOutOfRangeException("capacity");
            _capacity = capacity;
        }

        public int Count { get { lock (_lock) return _entries.Count; } }

        public void Add(ulong index, long ptsUs, T frame)
        {
            lock (_lock)
            {
                if (_shownAny && index <= _lastShown) return;  // stale or duplicate
                int at = _entries.Count;
                while (at > 0 && _entries[at - 1].Index > index) at--;
                if (at > 0 && _entries[at - 1].Index == index) return;
                _entries.Insert(at, new Entry { Index = index, PtsUs = ptsUs, Frame = frame });
                while (_entries.Count > _capacity)
                {
                    _entries.RemoveAt(0);
                    DroppedOverflow++;
                }
            }
        }

        /// <summary>
        /// The frame to show at session time `sessionSeconds`, or false when the frame on screen
        /// should stay (nothing newer is due). Frames older than the chosen one are discarded.
        /// </summary>
        public bool TrySelect(double sessionSeconds, out T frame)
        {
            frame = null;
            lock (_lock)
            {
                if (_entries.Count == 0) return false;
                long nowUs = (long)Math.Floor(sessionSeconds * 1e6);
                int pick = -1;
                for (int i = 0; i < _entries.Count; i++)
                {
                    if (_entries[i].PtsUs <= nowUs) pick = i;
                    else break;
                }
                if (pick < 0)
                {
                    if (_entries[0].PtsUs - nowUs <= (long)(ResyncSeconds * 1e6)) return false;
                    pick = 0;  // everything is far ahead: show the oldest rather than freeze
                    Resyncs++;
                }
                frame = _entries[pick].Frame;
                _lastShown = _entries[pick].Index;
                _shownAny = true;
                Skipped += pick;
                Shown++;
                _entries.RemoveRange(0, pick + 1);
                return true;
            }
        }

        /// <summary>A new session (reconnect): its frame indices and pts start again at 0.</summary>
        public void Clear()
        {
            lock (_lock)
            {
                _entries.Clear();
                _shownAny = false;
                _lastShown = 0;
            }
        }
    }
}
