using LpmNpc.Core;
using LpmNpc.Unity;
using UnityEngine;

namespace LpmNpc.Samples
{
    /// <summary>
    /// The Talking NPC sample in one component: put it on an empty GameObject in an empty scene and
    /// press Play. It builds a billboard NPC in front of the camera with every bridge component, then:
    ///   V (hold)   push-to-talk: the NPC listens to your microphone
    ///   Space      the NPC speaks `line` (any readable AudioClip) with its text
    ///   Backspace  interrupt the NPC (barge-in)
    ///   1..4       emotion: neutral, happy, sad, surprised;  T: a free-text direction
    ///   W / S      walk away / back (level of detail),  H: look away (pause) / back (resume)
    /// </summary>
    public sealed class TalkingNpcSample : MonoBehaviour
    {
        public string address = "http://127.0.0.1:50051";
        public string characterId = "default";
        public AudioClip line;
        [TextArea] public string lineText = "Bring me the map, and maybe the old brass compass by the window.";

        private NpcPerformer _performer;
        private NpcVoice _voice;
        private NpcDirection _direction;
        private Camera _camera;
        private Vector3 _cameraHome;
        private string _status = "connecting...";

        private void Awake()
        {
            _camera = Camera.main;
            if (_camera == null)
            {
                var camGo = new GameObject("Main Camera") { tag = "MainCamera" };
                _camera = camGo.AddComponent<Camera>();
                camGo.AddComponent<AudioListener>();
            }
            _camera.transform.position = new Vector3(0f, 1.6f, 0f);
            _camera.transform.rotation = Quaternion.identity;
            _cameraHome = _camera.transform.position;

            var npc = GameObject.CreatePrimitive(PrimitiveType.Quad);
            npc.name = "NPC";
            npc.transform.position = new Vector3(0f, 1.6f, 1.5f);
            npc.GetComponent<Renderer>().material = new Material(Shader.Find("Unlit/Transparent"));
            npc.SetActive(false);  // configure before OnEnable connects
            _performer = npc.AddComponent<NpcPerformer>();
            _performer.address = address;
            _performer.characterId = characterId;
            _performer.size = 512;
            _performer.fps = 30;
            npc.AddComponent<NpcBillboard>();
            _voice = npc.AddComponent<NpcVoice>();
            npc.AddComponent<PlayerVoiceCapture>();
            _direction = npc.AddComponent<NpcDirection>();
            _direction.phase = Phase.Idle;
            npc.AddComponent<NpcLevelOfDetail>();
            npc.SetActive(true);

            _performer.SessionStarted += info => _status = "session " + info.SessionId + " " + info.Width + "x" + info.Height + "@" + info.Fps;
            _performer.SpeechStarted += pts => _status = "NPC speaking";
            _performer.SpeechEnded += pts => _status = "NPC listening";
            _performer.ErrorReceived += (code, message, fatal) => _status = "error " + code + ": " + message;
        }

        private void Update()
        {
            if (Input.GetKeyDown(KeyCode.Space))
            {
                if (line == null) _status = "assign an AudioClip to 'line' (Load Type: Decompress On Load)";
                else _voice.Speak(line, lineText);
            }
            if (Input.GetKeyDown(KeyCode.Backspace)) _voice.Interrupt();
            if (Input.GetKeyDown(KeyCode.Alpha1)) _direction.SetEmotion(Emotion.Neutral, 1f, 300);
            if (Input.GetKeyDown(KeyCode.Alpha2)) _direction.SetEmotion(Emotion.Happy, 0.8f, 300);
            if (Input.GetKeyDown(KeyCode.Alpha3)) _direction.SetEmotion(Emotion.Sad, 0.7f, 600);
            if (Input.GetKeyDown(KeyCode.Alpha4)) _direction.SetEmotion(Emotion.Surprised, 1f, 150);
            if (Input.GetKeyDown(KeyCode.T)) _direction.Direct("nods slowly, a bit nervous");
            if (Input.GetKey(KeyCode.W)) _camera.transform.position -= Vector3.forward * 4f * Time.deltaTime;
            if (Input.GetKey(KeyCode.S) && _camera.transform.position.z < _cameraHome.z)
                _camera.transform.position += Vector3.forward * 4f * Time.deltaTime;
            if (Input.GetKeyDown(KeyCode.H)) _camera.transform.Rotate(0f, 180f, 0f);
        }

        private void OnGUI()
        {
            GUI.Label(new Rect(10, 10, 900, 22), _status);
            GUI.Label(new Rect(10, 30, 900, 22),
                "V talk · Space speak · Backspace interrupt · 1-4 emotion · T direction · W/S distance · H look away");
            var stats = _performer != null ? _performer.LastStats : null;
            if (stats != null)
                GUI.Label(new Rect(10, 50, 900, 22), string.Format("{0:F1} fps, latency p95 {1:F0} ms, dropped {2}",
                    stats.Fps, stats.LatencyP95Ms, stats.FramesDropped));
        }
    }
}
