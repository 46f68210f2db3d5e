using System;
using System.Collections.Generic;
using LpmNpc.Core;
using UnityEngine;

namespace LpmNpc.Unity
{
    /// <summary>
    /// Speaks NPC lines: plays the audio on an AudioSource at a dsp time on the session clock
    /// (AudioSource.PlayScheduled) and sends the same samples, with the line's text and sample_index,
    /// ~0.2 s ahead of playback. NpcPerformer shows, at every moment, the frame for the session time
    /// that AudioSettings.dspTime says is being heard, so lips match sound. Interrupt() is barge-in.
    /// </summary>
    [RequireComponent(typeof(AudioSource))]
    [AddComponentMenu("LPM NPC/NPC Voice")]
    public sealed class NpcVoice : MonoBehaviour
    {
        public NpcPerformer performer;
        [Tooltip("Set phase SPEAKING when a line starts (LISTENING after an interruption).")]
        public bool drivePhase = true;

        private AudioSource _source;
        private NpcLine _current;
        private StreamedLine _streamed;

        public bool Speaking { get { return performer != null && performer.Core != null && performer.Core.Speaking; } }

        private void Awake()
        {
            _source = GetComponent<AudioSource>();
            _source.playOnAwake = false;
            if (performer == null) performer = GetComponentInParent<NpcPerformer>();
        }

        /// <summary>
        /// Speak a whole clip (recorded line or finished TTS). The clip must be readable
        /// (Load Type "Decompress On Load") so AudioClip.GetData returns its samples.
        /// Returns false when the session is not running.
        /// </summary>
        public bool Speak(AudioClip clip, string text = "")
        {
            var core = performer != null ? performer.Core : null;
            if (core == null || !core.Running || clip == null) return false;
            var data = new float[clip.samples * clip.channels];
            if (!clip.GetData(data, 0)) return false;
            var mono = Pcm.Downmix(data, clip.channels);
            if (drivePhase) core.SetState(Phase.Speaking, Emotion.Unspecified, 0f, 0, "");
            _current = core.StartLine(text, clip.frequency, AudioSettings.dspTime);
            _current.Append(mono);
            _current.MarkComplete();
            _source.clip = clip;
            _source.PlayScheduled(core.LineStartDsp(_current));
            core.Tick(AudioSettings.dspTime);  // the first chunks go out right away
            return true;
        }

        /// <summary>
        /// Start a line whose audio streams in from a TTS engine: Append float samples (mono, at
        /// `sampleRate`) as they arrive, then Complete(). Playback starts on the session clock.
        /// </summary>
        public StreamedLine BeginStreamedLine(string text, int sampleRate)
        {
            var core = performer != null ? performer.Core : null;
            if (core == null || !core.Running) return null;
            if (drivePhase) core.SetState(Phase.Speaking, Emotion.Unspecified, 0f, 0, "");
            var line = core.StartLine(text, sampleRate, AudioSettings.dspTime);
            _current = line;
            _streamed = new StreamedLine(line);
            // a streaming clip pulls samples on the audio thread from the line's playback queue
            _source.clip = AudioClip.Create("lpm-npc tts", sampleRate * 600, 1, sampleRate, true, _streamed.OnAudioRead);
            _source.PlayScheduled(core.LineStartDsp(line));
            return _streamed;
        }

        /// <summary>Barge-in: stop the sound, stop sending the line, ACTION_INTERRUPT.</summary>
        public void Interrupt()
        {
            _source.Stop();
            _current = null;
            if (_streamed != null) { _streamed.Cancel(); _streamed = null; }
            var core = performer != null ? performer.Core : null;
            if (core == null) return;
            core.Interrupt();
            if (drivePhase) core.SetState(Phase.Listening, Emotion.Unspecified, 0f, 0, "");
        }

        private void Update()
        {
            if (_streamed != null && _streamed.Line.Complete && _streamed.Drained)
            {
                _source.SetScheduledEndTime(AudioSettings.dspTime);
                _streamed = null;
            }
        }

        /// <summary>A TTS line being streamed: samples go to the sidecar and to the speaker.</summary>
        public sealed class StreamedLine
        {
            public readonly NpcLine Line;
            private readonly Queue<float> _play = new Queue<float>();
            private readonly object _lock = new object();
            private bool _cancelled;

            public StreamedLine(NpcLine line) { Line = line; }

            public bool Drained { get { lock (_lock) return _play.Count == 0; } }

            public void Append(float[] mono)
            {
                if (_cancelled) return;
                Line.Append(mono);  // main thread: NpcPerformer.Update sends due chunks
                lock (_lock) foreach (var s in mono) _play.Enqueue(s);
            }

            public void Complete() { Line.MarkComplete(); }

            public void Cancel()
            {
                _cancelled = true;
                Line.Cancel();
                lock (_lock) _play.Clear();
            }

            /// <summary>AudioClip.PCMReaderCallback (audio thread): silence if the TTS lags.</summary>
            public void OnAudioRead(float[] data)
            {
                lock (_lock)
                    for (int i = 0; i < data.Length; i++) data[i] = _play.Count > 0 ? _play.Dequeue() : 0f;
            }
        }
    }
}
