using LpmNpc.Core;
using UnityEngine;

namespace LpmNpc.Unity
{
    /// <summary>
    /// Lowers size/fps with camera distance and pauses the NPC while its renderer is not visible
    /// (Renderer.isVisible), through Control messages (ACTION_SET_OUTPUT / PAUSE / RESUME).
    /// </summary>
    [AddComponentMenu("LPM NPC/NPC Level Of Detail")]
    public sealed class NpcLevelOfDetail : MonoBehaviour
    {
        public NpcPerformer performer;
        [Tooltip("The billboard's renderer (visibility).")] public Renderer target;
        [Tooltip("Camera for distance; empty = Camera.main.")] public Camera viewCamera;
        public LodTier[] tiers = LodPolicy.DefaultTiers();
        public float hysteresisMetres = 0.5f;
        public float hideDelaySeconds = 0.5f;

        private LodPolicy _policy;

        private void Awake()
        {
            if (performer == null) performer = GetComponentInParent<NpcPerformer>();
            if (target == null) target = GetComponentInChildren<Renderer>();
            _policy = new LodPolicy(tiers) { HysteresisMetres = hysteresisMetres, HideDelaySeconds = hideDelaySeconds };
        }

        private void Update()
        {
            if (performer == null || performer.Core == null || !performer.Core.Running || target == null) return;
            var cam = viewCamera != null ? viewCamera : Camera.main;
            if (cam == null) return;
            float distance = Vector3.Distance(cam.transform.position, target.transform.position);
            performer.Core.Control(_policy.Update(distance, target.isVisible, Time.realtimeSinceStartup));
        }
    }
}
