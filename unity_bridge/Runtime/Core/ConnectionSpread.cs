using System;

namespace LpmNpc.Core
{
    /// <summary>
    /// Which of a sidecar's connections the next NPC's stream uses. A sidecar started with
    /// `lpm-npc serve --fronts N` runs N server processes on one port and the kernel hands each new
    /// *connection* to one of them: NPCs that share one connection all land on one process. With
    /// several connections per sidecar, each new stream takes the connection with the fewest open
    /// streams (ties: the lowest index), and gives it back when it ends.
    /// </summary>
    public sealed class ConnectionSpread
    {
        private readonly object _lock = new object();
        private readonly int[] _open;

        public ConnectionSpread(int connections)
        {
            if (connections < 1)
                throw new ArgumentOutOfRangeException(nameof(connections), connections,
                    "a sidecar needs at least one connection");
            _open = new int[connections];
        }

        public int Count { get { return _open.Length; } }

        /// <summary>The connection for a new stream; call Release(index) once when the stream ends.</summary>
        public int Acquire()
        {
            lock (_lock)
            {
                int best = 0;
                for (int i = 1; i < _open.Length; i++)
                    if (_open[i] < _open[best]) best = i;
                _open[best]++;
                return best;
            }
        }

        public void Release(int index)
        {
            lock (_lock)
            {
                if (index < 0 || index >= _open.Length)
                    throw new ArgumentOutOfRangeException(nameof(index), index, "not a connection of this sidecar");
                if (_open[index] > 0) _open[index]--;
            }
        }

        /// <summary>Streams open on connection `index`.</summary>
        public int OpenOn(int index)
        {
            lock (_lock) return _open[index];
        }
    }
}
