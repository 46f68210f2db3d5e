using UnityEditor;
using UnityEngine;

namespace LpmNpc.Unity.Editor
{
    /// <summary>Inspector for designers: edit phase / emotion / direction and send them live.</summary>
    [CustomEditor(typeof(NpcDirection))]
    internal sealed class NpcDirectionEditor : UnityEditor.Editor
    {
        public override void OnInspectorGUI()
        {
            DrawDefaultInspector();
            var direction = (NpcDirection)target;
            using (new EditorGUI.DisabledScope(!Application.isPlaying))
            {
                if (GUILayout.Button("Apply now")) direction.Apply();
                EditorGUILayout.BeginHorizontal();
                if (GUILayout.Button("Idle")) direction.Idle();
                if (GUILayout.Button("Listen")) direction.Listen();
                if (GUILayout.Button("Think")) direction.Think();
                if (GUILayout.Button("Speak")) direction.Speak();
                EditorGUILayout.EndHorizontal();
            }
            var performer = direction.performer;
            if (Application.isPlaying && performer != null)
            {
                var info = performer.Info;
                EditorGUILayout.HelpBox(performer.Connected && info != null
                    ? "Session " + info.SessionId + ": " + info.Width + "x" + info.Height + "@" + info.Fps
                    : "Not connected to " + performer.address, MessageType.None);
            }
        }
    }
}
