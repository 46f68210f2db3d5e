// LpmNpc runtime module.
//
// gRPC and protobuf are linked the way shipping UE gRPC plugins do it: prebuilt static libraries per
// platform under Source/ThirdParty/LpmNpcCore/lib/<Platform>/ (see Source/ThirdParty/LpmNpcCore/BUILDING.md),
// with the engine's own OpenSSL and zlib. No gRPC or protobuf header is ever compiled by UBT: the
// module only includes the core's plain C++ headers (Source/ThirdParty/LpmNpcCore/include/lpmnpc/*.h).
using System.IO;
using UnrealBuildTool;

public class LpmNpc : ModuleRules
{
	public LpmNpc(ReadOnlyTargetRules Target) : base(Target)
	{
		PCHUsage = PCHUsageMode.UseExplicitOrSharedPCHs;
		CppStandard = CppStandardVersion.Cpp17;

		PublicDependencyModuleNames.AddRange(new string[] { "Core", "CoreUObject", "Engine" });
		PrivateDependencyModuleNames.AddRange(new string[] { "RHI", "RenderCore", "AudioMixer", "AudioCaptureCore" });

		string CoreRoot = Path.GetFullPath(Path.Combine(ModuleDirectory, "..", "ThirdParty", "LpmNpcCore"));
		PrivateIncludePaths.Add(Path.Combine(CoreRoot, "include"));

		string Platform = Target.Platform.ToString();  // "Win64", "Linux"
		string LibDir = Path.Combine(CoreRoot, "lib", Platform);
		bool bHaveCore = Directory.Exists(LibDir) &&
			(File.Exists(Path.Combine(LibDir, "lpmnpc_core.lib")) || File.Exists(Path.Combine(LibDir, "liblpmnpc_core.a")));
		PublicDefinitions.Add("WITH_LPMNPC_CORE=" + (bHaveCore ? "1" : "0"));

		if (bHaveCore)
		{
			// Every static library of the prebuilt set: the core, grpc++, grpc, gpr, upb, address_sorting,
			// re2, cares, protobuf and the absl_* libraries gRPC 1.5x depends on.
			string Pattern = Target.Platform == UnrealTargetPlatform.Win64 ? "*.lib" : "*.a";
			foreach (string Lib in Directory.GetFiles(LibDir, Pattern))
			{
				PublicAdditionalLibraries.Add(Lib);
			}
			if (Target.Platform == UnrealTargetPlatform.Win64)
			{
				PublicSystemLibraries.AddRange(new string[] { "ws2_32.lib", "crypt32.lib", "iphlpapi.lib", "advapi32.lib", "bcrypt.lib", "dbghelp.lib" });
			}
			// The engine's OpenSSL and zlib satisfy gRPC's ssl/zlib symbols (gRPC built with the
			// "package" providers against the same versions, see BUILDING.md).
			AddEngineThirdPartyPrivateStaticDependencies(Target, "OpenSSL", "zlib");
		}
	}
}
