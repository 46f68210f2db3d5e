using LpmNpc.Core;
using UnityEngine;

namespace LpmNpc.Unity
{
    /// <summary>
    /// Shows the NPC's frames on a quad that faces the camera. One RGBA32 Texture2D per frame size,
    /// filled with LoadRawTextureData and uploaded with Apply(false) on the main thread. Frames come
    /// with flip_y set (bottom row first, Unity's texture layout), so they load upright. The material
    /// should be transparent (e.g. "Unlit/Transparent") to respect the alpha matte.
    /// </summary>
    [RequireComponent(typeof(Renderer))]
    [AddComponentMenu("LPM NPC/NPC Billboard")]
    public sealed class NpcBillboard : MonoBehaviour
    {
        public NpcPerformer performer;
        [Tooltip("Camera to face; empty = Camera.main.")] public Camera faceCamera;
        [Tooltip("Only turn around the vertical axis (a standing character).")] public bool yAxisOnly = true;
        public string textureProperty = "_MainTex";

        private Texture2D _texture;
        private Renderer _renderer;
        private MaterialPropertyBlock _block;

        public Texture2D Texture { get { return _texture; } }
        public int FramesShown { get; private set; }

        private void Awake()
        {
            _renderer = GetComponent<Renderer>();
            _block = new MaterialPropertyBlock();
            if (performer == null) performer = GetComponentInParent<NpcPerformer>();
        }

        private void OnEnable() { if (performer != null) performer.FrameDue += Show; }

        private void OnDisable() { if (performer != null) performer.FrameDue -= Show; }

        private void OnDestroy()
        {
            if (_texture != null) Destroy(_texture);
        }

        /// <summary>Main thread only (FrameDue is raised from NpcPerformer.Update).</summary>
        public void Show(FrameData frame)
        {
            if (frame.Format == Core.PixelFormat.Jpeg)
            {
                EnsureTexture(frame.Width, frame.Height);
                _texture.LoadImage(frame.Data, false);  // JPEG: no alpha; decoded rows are upright already
            }
            else
            {
                EnsureTexture(frame.Width, frame.Height);
                byte[] data = frame.Data;
                if (frame.Format == Core.PixelFormat.Bgra8) data = SwapRedBlue(data);
                if (frame.Stride != frame.Width * 4) data = Unpad(data, frame.Width, frame.Height, frame.Stride);
                _texture.LoadRawTextureData(data);
                _texture.Apply(false);  // no mipmaps: just upload
            }
            FramesShown++;
        }

        private void EnsureTexture(int width, int height)
        {
            if (_texture != null && _texture.width == width && _texture.height == height) return;
            if (_texture != null) Destroy(_texture);  // the size changed (level of detail)
            _texture = new Texture2D(width, height, TextureFormat.RGBA32, false)
            {
                wrapMode = TextureWrapMode.Clamp,
                filterMode = FilterMode.Bilinear,
                name = "lpm-npc frame",
            };
            _renderer.GetPropertyBlock(_block);
            _block.SetTexture(textureProperty, _texture);
            _renderer.SetPropertyBlock(_block);
        }

        private void LateUpdate()
        {
            var cam = faceCamera != null ? faceCamera : Camera.main;
            if (cam == null) return;
            Vector3 toCamera = cam.transform.position - transform.position;
            if (yAxisOnly) toCamera.y = 0f;
            if (toCamera.sqrMagnitude < 1e-6f) return;
            // a Unity quad shows its front along -Z: point -Z at the camera
            transform.rotation = Quaternion.LookRotation(-toCamera.normalized, Vector3.up);
        }

        private static byte[] SwapRedBlue(byte[] src)
        {
            var dst = new byte[src.Length];
            for (int i = 0; i + 3 < src.Length; i += 4)
            {
                dst[i] = src[i + 2];
                dst[i + 1] = src[i + 1];
                dst[i + 2] = src[i];
                dst[i + 3] = src[i + 3];
            }
            return dst;
        }

        private static byte[] Unpad(byte[] src, int width, int height, int stride)
        {
            var dst = new byte[width * height * 4];
            for (int y = 0; y < height; y++) System.Buffer.BlockCopy(src, y * stride, dst, y * width * 4, width * 4);
            return dst;
        }
    }
}
