using LpmNpc.Core;
using UnityEngine;

namespace LpmNpc.Unity
{
    /// <summary>
    /// The player's microphone -> 16 kHz mono PCM16 chunks (20..40 ms) on the PLAYER channel, as
    /// recorded. Records into a looping clip (Microphone.Start(device, true, 1, rate)), reads what is
    /// new each frame with wrap-around (Microphone.GetPosition + AudioClip.GetData), resamples.
    /// </summary>
    [AddComponentMenu("LPM NPC/Player Voice Capture")]
    public sealed class PlayerVoiceCapture : MonoBehaviour
    {
        public enum Mode { AlwaysOn, PushToTalk }

        public NpcPerformer performer;
        public Mode mode = Mode.PushToTalk;
        [Tooltip("Push-to-talk key (legacy Input Manager). Or call SetTalking from your own input code.")]
        public KeyCode pushToTalkKey = KeyCode.V;
        [Tooltip("Empty = default microphone.")] public string device = "";
        [Range(20, 40)] public int chunkMs = 20;
        [Tooltip("Also set phase LISTENING when the player starts talking.")] public bool setListeningPhase = true;

        private AudioClip _clip;
        private MicRingReader _reader;
        private PlayerVoicePipeline _pipeline;
        private float[] _buffer = new float[0];
        private bool _talking;
        private float _lastPoll;

        public bool Recording { get { return _clip != null; } }
        public bool Talking { get { return _talking; } }

        private void Awake()
        {
            if (performer == null) performer = GetComponentInParent<NpcPerformer>();
        }

        private void OnEnable() { StartMicrophone(); }

        private void OnDisable() { StopMicrophone(); }

        private void StartMicrophone()
        {
            if (Microphone.devices.Length == 0)
            {
                Debug.LogWarning("[lpm-npc] no microphone found; PlayerVoiceCapture is idle.", this);
                return;
            }
            string dev = string.IsNullOrEmpty(device) ? null : device;
            int minFreq, maxFreq;
            Microphone.GetDeviceCaps(dev, out minFreq, out maxFreq);
            // 16 kHz if the device can, else its own rate (0/0 = any rate); the pipeline resamples
            int rate = (minFreq == 0 && maxFreq == 0) ? 16000 : Mathf.Clamp(16000, minFreq, maxFreq);
            _clip = Microphone.Start(dev, true, 1, rate);
            if (_clip == null) return;
            _reader = new MicRingReader(_clip.samples, _clip.frequency);
            _pipeline = new PlayerVoicePipeline(_clip.frequency, _clip.channels, chunkMs);
            _reader.Restart(Microphone.GetPosition(dev));
            _lastPoll = Time.realtimeSinceStartup;
        }

        private void StopMicrophone()
        {
            if (_clip == null) return;
            Microphone.End(string.IsNullOrEmpty(device) ? null : device);
            Destroy(_clip);
            _clip = null;
        }

        /// <summary>Push-to-talk from scripts (UI button, new Input System, VR trigger, ...).</summary>
        public void SetTalking(bool talking)
        {
            if (talking == _talking || _clip == null) return;
            _talking = talking;
            if (talking)
            {
                _reader.Restart(Microphone.GetPosition(string.IsNullOrEmpty(device) ? null : device));
                if (setListeningPhase && performer != null && performer.Core != null)
                    performer.Core.SetState(Phase.Listening, Emotion.Unspecified, 0f, 0, "");
            }
            else if (performer != null && performer.Core != null)
            {
                Poll();
                performer.Core.SendMic(_pipeline.Flush());
            }
        }

        private void Update()
        {
            if (_clip == null) return;
            if (mode == Mode.PushToTalk && pushToTalkKey != KeyCode.None)
            {
                if (Input.GetKeyDown(pushToTalkKey)) SetTalking(true);
                if (Input.GetKeyUp(pushToTalkKey)) SetTalking(false);
            }
            if (mode == Mode.AlwaysOn) _talking = true;
            if (_talking) Poll();
            else _reader.Restart(Microphone.GetPosition(string.IsNullOrEmpty(device) ? null : device));
            _lastPoll = Time.realtimeSinceStartup;
        }

        private void Poll()
        {
            int offset, count;
            float now = Time.realtimeSinceStartup;
            int pos = Microphone.GetPosition(string.IsNullOrEmpty(device) ? null : device);
            if (!_reader.Advance(pos, now - _lastPoll, out offset, out count)) return;
            int n = count * _clip.channels;
            if (_buffer.Length != n) _buffer = new float[n];
            _clip.GetData(_buffer, offset);  // wraps around the end of the looping clip by itself
            if (performer != null && performer.Core != null) performer.Core.SendMic(_pipeline.Push(_buffer));
        }
    }
}
