using LpmNpc.Core;
using UnityEngine;

namespace LpmNpc.Unity
{
    /// <summary>
    /// The designer's handle on the NPC: phase, emotion with intensity and transition time, and a
    /// free-text direction. Set the fields in the inspector and press Apply (play mode), call the
    /// methods from scripts, wire them to UnityEvents (buttons, triggers), or from Timeline with a
    /// Signal Receiver (each method takes zero or one argument so UnityEvents can call it).
    /// </summary>
    [AddComponentMenu("LPM NPC/NPC Direction")]
    public sealed class NpcDirection : MonoBehaviour
    {
        public NpcPerformer performer;
        public Phase phase = Phase.Idle;
        public Emotion emotion = Emotion.Neutral;
        [Range(0f, 1f)] public float intensity = 1f;
        [Tooltip("Milliseconds to blend into the new emotion (0 = 300).")] public int transitionMs = 300;
        [TextArea] public string direction = "";
        [Tooltip("Send the inspector state whenever a session starts (and after reconnects).")]
        public bool applyOnSessionStart = true;

        private void Awake()
        {
            if (performer == null) performer = GetComponentInParent<NpcPerformer>();
        }

        private void OnEnable() { if (performer != null) performer.SessionStarted += OnStarted; }

        private void OnDisable() { if (performer != null) performer.SessionStarted -= OnStarted; }

        private void OnStarted(SessionInfo info) { if (applyOnSessionStart) Apply(); }

        /// <summary>Send phase + emotion + direction as they are set on this component.</summary>
        public void Apply()
        {
            if (performer == null || performer.Core == null) return;
            performer.Core.SetState(phase, emotion, intensity, (uint)Mathf.Max(0, transitionMs), direction);
        }

        // -- script / UnityEvent / Timeline signal API ---------------------------------------------
        public void SetPhase(Phase p) { phase = p; Send(p, Emotion.Unspecified, ""); }
        public void Idle() { SetPhase(Phase.Idle); }
        public void Listen() { SetPhase(Phase.Listening); }
        public void Think() { SetPhase(Phase.Thinking); }
        public void Speak() { SetPhase(Phase.Speaking); }

        public void SetEmotion(Emotion e, float newIntensity, int newTransitionMs)
        {
            emotion = e;
            intensity = newIntensity;
            transitionMs = newTransitionMs;
            Send(Phase.Unspecified, e, "");
        }

        /// <summary>UnityEvent-friendly: the emotion's name ("happy", "Sad", ...), current intensity.</summary>
        public void SetEmotionByName(string name)
        {
            Emotion e;
            if (System.Enum.TryParse(name, true, out e)) SetEmotion(e, intensity, transitionMs);
            else Debug.LogWarning("[lpm-npc] unknown emotion '" + name + "'", this);
        }

        public void SetIntensity(float value) { intensity = Mathf.Clamp01(value); Send(Phase.Unspecified, emotion, ""); }

        /// <summary>Free-text direction, e.g. "nods slowly, a bit nervous" (keeps phase and emotion).</summary>
        public void Direct(string text) { direction = text ?? ""; Send(Phase.Unspecified, Emotion.Unspecified, direction); }

        private void Send(Phase p, Emotion e, string text)
        {
            if (performer == null || performer.Core == null) return;
            performer.Core.SetState(p, e, intensity, (uint)Mathf.Max(0, transitionMs), text);
        }
    }
}
