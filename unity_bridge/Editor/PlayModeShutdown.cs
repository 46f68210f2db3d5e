using UnityEditor;

namespace LpmNpc.Unity.Editor
{
    /// <summary>
    /// Leaving Play mode cancels every Perform stream and disposes the gRPC channels, so no network
    /// task outlives the session and the editor never waits on a half-open stream.
    /// </summary>
    [InitializeOnLoad]
    internal static class PlayModeShutdown
    {
        static PlayModeShutdown()
        {
            EditorApplication.playModeStateChanged += state =>
            {
                if (state == PlayModeStateChange.ExitingPlayMode) SidecarChannels.Shutdown();
            };
            AssemblyReloadEvents.beforeAssemblyReload += SidecarChannels.Shutdown;
        }
    }
}
