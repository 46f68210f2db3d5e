using UnityEngine;

namespace LpmNpc.Unity
{
    /// <summary>Players: quitting the application closes every stream and channel.</summary>
    internal static class ApplicationLifetime
    {
        [RuntimeInitializeOnLoadMethod(RuntimeInitializeLoadType.SubsystemRegistration)]
        private static void Hook()
        {
            Application.quitting -= SidecarChannels.Shutdown;
            Application.quitting += SidecarChannels.Shutdown;
        }
    }
}
