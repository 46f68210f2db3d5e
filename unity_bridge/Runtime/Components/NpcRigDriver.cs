using System.Collections.Generic;
using LpmNpc.Core;
using UnityEngine;
using V1 = LpmNpc.V1;

namespace LpmNpc.Unity
{
    /// <summary>
    /// Optional: drives a 3D character's SkinnedMeshRenderer from RigFrames (set NpcPerformer.sendRig).
    /// Weights map to blendshapes by name (SessionStarted.rig_channel_names, e.g. "jaw_open"), with an
    /// optional prefix ("blendShape1.") and a remap list for rigs that name them differently.
    /// </summary>
    [AddComponentMenu("LPM NPC/NPC Rig Driver")]
    public sealed class NpcRigDriver : MonoBehaviour
    {
        [System.Serializable]
        public struct Remap
        {
            public string channel;    // name from rig_channel_names
            public string blendShape; // name on the mesh
        }

        public NpcPerformer performer;
        public SkinnedMeshRenderer face;
        public string blendShapePrefix = "";
        public Remap[] remaps = new Remap[0];
        [Tooltip("Unity blendshape weights go 0..100.")] public float weightScale = 100f;
        public Transform head;

        private int[] _shapeIndex = new int[0];

        private void Awake() { if (performer == null) performer = GetComponentInParent<NpcPerformer>(); }

        private void OnEnable()
        {
            if (performer == null) return;
            performer.SessionStarted += Map;
            performer.RigFrameReceived += Apply;
        }

        private void OnDisable()
        {
            if (performer == null) return;
            performer.SessionStarted -= Map;
            performer.RigFrameReceived -= Apply;
        }

        private void Map(SessionInfo info)
        {
            var names = new Dictionary<string, string>();
            foreach (var r in remaps) names[r.channel] = r.blendShape;
            _shapeIndex = new int[info.RigChannelNames.Length];
            var mesh = face != null ? face.sharedMesh : null;
            for (int i = 0; i < _shapeIndex.Length; i++)
            {
                string ch = info.RigChannelNames[i];
                string shape;
                if (!names.TryGetValue(ch, out shape)) shape = blendShapePrefix + ch;
                _shapeIndex[i] = mesh != null ? mesh.GetBlendShapeIndex(shape) : -1;  // -1 = not on this mesh
            }
        }

        private void Apply(V1.RigFrame rig)
        {
            if (face == null) return;
            int n = Mathf.Min(rig.Weights.Count, _shapeIndex.Length);
            for (int i = 0; i < n; i++)
                if (_shapeIndex[i] >= 0) face.SetBlendShapeWeight(_shapeIndex[i], rig.Weights[i] * weightScale);
            // Unity is left-handed: a positive Euler y turns the face toward the character's right,
            // while head_yaw_deg > 0 turns it toward the character's left (docs/RIG_MAPPING.md).
            if (head != null)
                head.localRotation = Quaternion.Euler(rig.HeadPitchDeg, -rig.HeadYawDeg, rig.HeadRollDeg);
        }
    }
}
