// ULpmNpcComponent: see LpmNpcComponent.h and unreal_bridge/README.md.
//
// The NPC-audio clock: the procedural voice wave plays continuously from the moment the session
// starts (silence when the NPC says nothing). Wave sample k is session sample k - Delay, where Delay
// = server lookahead + PlaybackMarginMs, because frames of pts P leave the server at about P +
// lookahead. The write head runs AudioLeadSeconds ahead of the playhead: a line's samples are queued
// for playback and sent to the server with sample_index = their session sample at the same moment,
// so the server sees them ~lead - margin before it renders them. The playhead (queued - still
// available samples, minus the output latency) picks the frame to show.
#include "LpmNpcComponent.h"

#include "AudioCaptureCore.h"
#include "Camera/PlayerCameraManager.h"
#include "Components/AudioComponent.h"
#include "Components/PrimitiveComponent.h"
#include "Components/SkeletalMeshComponent.h"
#include "Components/StaticMeshComponent.h"
#include "Engine/Texture2D.h"
#include "Engine/World.h"
#include "GameFramework/Actor.h"
#include "GameFramework/PlayerController.h"
#include "Materials/MaterialInstanceDynamic.h"
#include "Misc/EngineVersionComparison.h"
#include "RHITypes.h"
#include "Sound/SoundWaveProcedural.h"

#include <memory>
#include <vector>

#if WITH_LPMNPC_CORE
#include "lpmnpc/session.h"
#endif

DEFINE_LOG_CATEGORY_STATIC(LogLpmNpc, Log, All);

struct FLpmNpcRuntime
{
#if WITH_LPMNPC_CORE
	std::unique_ptr<lpmnpc::Session> Session;
#endif
	// Voice clock, in session samples at NpcSampleRate.
	bool bVoiceStarted = false;
	int64 DelaySamples = 0;
	int64 BaseSample = 0;      // session sample of the first sample queued since the last reset
	int64 TotalQueued = 0;     // samples queued since the last reset
	int64 WriteHead = 0;       // session sample of the next sample to queue
	TArray<int16> PendingVoice;
	FString PendingText;
	bool bLineStartPending = false;
	TArray<FString> RigNames;
	TUniquePtr<Audio::FAudioCapture> Mic;
	bool bWarnedFormat = false;
};

namespace
{
// Linear resampler + downmix to mono s16 (voice lines are short; quality is ample for lip-sync).
void ToMonoAtRate(const int16* In, int32 Frames, int32 Channels, int32 InRate, int32 OutRate, TArray<int16>& Out)
{
	Channels = FMath::Max(1, Channels);
	if (Frames <= 0 || InRate <= 0 || OutRate <= 0)
	{
		return;
	}
	auto Mono = [&](int32 i) -> float {
		float Sum = 0.f;
		for (int32 c = 0; c < Channels; ++c)
		{
			Sum += In[i * Channels + c];
		}
		return Sum / Channels;
	};
	const int64 OutFrames = (int64)Frames * OutRate / InRate;
	Out.Reserve(Out.Num() + OutFrames);
	for (int64 j = 0; j < OutFrames; ++j)
	{
		const double Pos = (double)j * InRate / OutRate;
		const int32 i0 = FMath::Min((int32)Pos, Frames - 1);
		const int32 i1 = FMath::Min(i0 + 1, Frames - 1);
		const float t = (float)(Pos - i0);
		const float v = Mono(i0) * (1.f - t) + Mono(i1) * t;
		Out.Add((int16)FMath::Clamp(FMath::RoundToInt(v), -32768, 32767));
	}
}
}  // namespace

ULpmNpcComponent::ULpmNpcComponent()
{
	PrimaryComponentTick.bCanEverTick = true;
	PrimaryComponentTick.bStartWithTickEnabled = true;
	Runtime = MakeUnique<FLpmNpcRuntime>();
}

ULpmNpcComponent::~ULpmNpcComponent() = default;

void ULpmNpcComponent::BeginPlay()
{
	Super::BeginPlay();
	if (!FaceMaterial && BillboardMaterial)
	{
		// Find the billboard: tagged component first, else the first static mesh of the owner.
		UPrimitiveComponent* Target = nullptr;
		if (AActor* Owner = GetOwner())
		{
			if (!BillboardTag.IsNone())
			{
				for (UActorComponent* C : Owner->GetComponentsByTag(UPrimitiveComponent::StaticClass(), BillboardTag))
				{
					Target = Cast<UPrimitiveComponent>(C);
					break;
				}
			}
			if (!Target)
			{
				Target = Owner->FindComponentByClass<UStaticMeshComponent>();
			}
		}
		if (Target)
		{
			SetBillboard(Target, BillboardMaterialIndex);
		}
	}
	if (bAutoStart)
	{
		StartSession();
	}
}

void ULpmNpcComponent::EndPlay(const EEndPlayReason::Type EndPlayReason)
{
	StopSession();
	Super::EndPlay(EndPlayReason);
}

bool ULpmNpcComponent::StartSession()
{
#if WITH_LPMNPC_CORE
	if (Runtime->Session)
	{
		return false;
	}
	lpmnpc::SessionOptions O;
	O.address = TCHAR_TO_UTF8(*ServerAddress);
	O.character_id = TCHAR_TO_UTF8(*CharacterId);
	O.width = (uint32)FMath::Clamp(FrameSize, 16, 1024);
	O.height = O.width;
	O.fps = (uint32)Fps;
	O.pixel_format = lpmnpc::PixelFormat::BGRA8;  // PF_B8G8R8A8: upload without conversion
	O.flip_y = false;                             // UE textures: first row = top
	O.alpha_matte = bAlphaMatte;
	O.send_rig = bSendRig;
	O.npc_sample_rate = (uint32)NpcSampleRate;
	O.resume_token = TCHAR_TO_UTF8(*ResumeToken);
	Runtime->Session = std::make_unique<lpmnpc::Session>(O);
	Runtime->Session->Start();
	if (bCaptureMicrophone)
	{
		OpenMicrophone();
	}
	UE_LOG(LogLpmNpc, Log, TEXT("%s: connecting to %s (character %s)"), *GetNameSafe(GetOwner()), *ServerAddress, *CharacterId);
	return true;
#else
	UE_LOG(LogLpmNpc, Error, TEXT("LpmNpc was built without its core libraries: build Source/ThirdParty/LpmNpcCore (see BUILDING.md)."));
	OnError.Broadcast(12, TEXT("LpmNpc core libraries missing: see Source/ThirdParty/LpmNpcCore/BUILDING.md"), true);
	return false;
#endif
}

void ULpmNpcComponent::FinishSession()
{
#if WITH_LPMNPC_CORE
	if (Runtime->Session)
	{
		Runtime->Session->CloseSend();
	}
#endif
}

void ULpmNpcComponent::StopSession()
{
	CloseMicrophone();  // the capture callback uses the session: close it first
#if WITH_LPMNPC_CORE
	if (Runtime->Session)
	{
		Runtime->Session->Stop();
		Runtime->Session.reset();
	}
#endif
	if (VoiceComponent)
	{
		VoiceComponent->Stop();
	}
	if (VoiceWave)
	{
		VoiceWave->ResetAudio();
	}
	Runtime->bVoiceStarted = false;
	Runtime->PendingVoice.Reset();
	bNpcSpeaking = false;
}

// -- sending ------------------------------------------------------------------------------------

void ULpmNpcComponent::SpeakPcm16(const TArray<uint8>& PcmS16le, int32 SampleRate, int32 NumChannels, const FString& Text)
{
	const int32 Channels = FMath::Max(1, NumChannels);
	const int32 Frames = PcmS16le.Num() / (2 * Channels);
	if (Frames <= 0)
	{
		return;
	}
	// Voice lines go on the session clock in order; a new line while one is pending follows it.
	Runtime->bLineStartPending = Runtime->PendingVoice.Num() == 0;
	if (Runtime->bLineStartPending)
	{
		Runtime->PendingText = Text;
	}
	ToMonoAtRate(reinterpret_cast<const int16*>(PcmS16le.GetData()), Frames, Channels, SampleRate, NpcSampleRate,
		Runtime->PendingVoice);
}

void ULpmNpcComponent::SetPhase(ELpmNpcPhase Phase)
{
#if WITH_LPMNPC_CORE
	if (Runtime->Session)
	{
		Runtime->Session->SetState(static_cast<lpmnpc::Phase>(Phase));
	}
#endif
}

void ULpmNpcComponent::SetEmotion(ELpmNpcEmotion Emotion, float Intensity, int32 TransitionMs)
{
#if WITH_LPMNPC_CORE
	if (Runtime->Session)
	{
		Runtime->Session->SetState(lpmnpc::Phase::Unspecified, static_cast<lpmnpc::Emotion>(Emotion),
			FMath::Clamp(Intensity, 0.f, 1.f), (uint32)FMath::Clamp(TransitionMs, 0, 60000));
	}
#endif
}

void ULpmNpcComponent::SetDirection(const FString& Direction)
{
#if WITH_LPMNPC_CORE
	if (Runtime->Session)
	{
		Runtime->Session->SetState(lpmnpc::Phase::Unspecified, lpmnpc::Emotion::Unspecified, 0.f, 0,
			std::string(TCHAR_TO_UTF8(*Direction)));
	}
#endif
}

void ULpmNpcComponent::Interrupt()
{
	// Stop sending the line, flush local playback, tell the server (barge-in).
	Runtime->PendingVoice.Reset();
	if (VoiceWave && Runtime->bVoiceStarted)
	{
		const int64 Avail = VoiceWave->GetAvailableAudioByteCount() / 2;
		const int64 Playhead = Runtime->BaseSample + Runtime->TotalQueued - Avail;
		VoiceWave->ResetAudio();
		Runtime->BaseSample = Playhead;  // keep the playhead continuous; silence follows
		Runtime->TotalQueued = 0;
		Runtime->WriteHead = Playhead;
	}
#if WITH_LPMNPC_CORE
	if (Runtime->Session)
	{
		Runtime->Session->Interrupt();
	}
#endif
}

void ULpmNpcComponent::SetLevelOfDetail(int32 Size, int32 NewFps)
{
#if WITH_LPMNPC_CORE
	if (Runtime->Session)
	{
		const uint32 S = (uint32)FMath::Clamp(Size, 16, 1024);
		Runtime->Session->SetOutput(S, S, (uint32)FMath::Max(0, NewFps));
	}
#endif
}

void ULpmNpcComponent::SetRigTarget(USkeletalMeshComponent* Mesh)
{
	RigTarget = Mesh;
}

void ULpmNpcComponent::SetBillboard(UPrimitiveComponent* Mesh, int32 MaterialIndex)
{
	if (!Mesh || !BillboardMaterial)
	{
		return;
	}
	FaceMaterial = UMaterialInstanceDynamic::Create(BillboardMaterial, this);
	Mesh->SetMaterial(MaterialIndex, FaceMaterial);
	if (FaceTexture)
	{
		FaceMaterial->SetTextureParameterValue(TextureParameterName, FaceTexture);
	}
}

// -- state --------------------------------------------------------------------------------------

ELpmNpcConnection ULpmNpcComponent::GetConnectionState() const
{
#if WITH_LPMNPC_CORE
	if (Runtime->Session)
	{
		return static_cast<ELpmNpcConnection>(static_cast<int32>(Runtime->Session->State()));
	}
#endif
	return ELpmNpcConnection::Idle;
}

FString ULpmNpcComponent::GetResumeToken() const
{
#if WITH_LPMNPC_CORE
	if (Runtime->Session)
	{
		return UTF8_TO_TCHAR(Runtime->Session->ResumeToken().c_str());
	}
#endif
	return ResumeToken;
}

float ULpmNpcComponent::GetRigWeight(const FString& Channel) const
{
	const float* W = RigWeights.Find(Channel);
	return W ? *W : 0.f;
}

// -- per frame ----------------------------------------------------------------------------------

void ULpmNpcComponent::TickComponent(float DeltaTime, ELevelTick TickType, FActorComponentTickFunction* ThisTickFunction)
{
	Super::TickComponent(DeltaTime, TickType, ThisTickFunction);
#if WITH_LPMNPC_CORE
	if (!Runtime->Session)
	{
		return;
	}
	PumpEvents();
	PumpVoice();
	PumpFrames();
	if (bSendRig)
	{
		PumpRig();
	}
	UpdateLod(DeltaTime);
#endif
}

void ULpmNpcComponent::EnsureVoice()
{
	if (!VoiceWave)
	{
		VoiceWave = NewObject<USoundWaveProcedural>(this);
		VoiceWave->SetSampleRate(NpcSampleRate);
		VoiceWave->NumChannels = 1;
		VoiceWave->Duration = INDEFINITELY_LOOPING_DURATION;
		VoiceWave->SoundGroup = SOUNDGROUP_Voice;
		VoiceWave->bLooping = false;
	}
	if (!VoiceComponent)
	{
		VoiceComponent = NewObject<UAudioComponent>(GetOwner());
		VoiceComponent->bAutoActivate = false;
		VoiceComponent->bAutoDestroy = false;
		if (AActor* Owner = GetOwner())
		{
			if (USceneComponent* Root = Owner->GetRootComponent())
			{
				VoiceComponent->SetupAttachment(Root);
			}
		}
		VoiceComponent->RegisterComponent();
		VoiceComponent->SetSound(VoiceWave);
	}
}

void ULpmNpcComponent::PumpVoice()
{
#if WITH_LPMNPC_CORE
	lpmnpc::Session& S = *Runtime->Session;
	if (!Runtime->bVoiceStarted)
	{
		if (S.State() != lpmnpc::SessionState::Streaming)
		{
			return;
		}
		EnsureVoice();
		const lpmnpc::SessionInfo Info = S.Info();
		const int64 DelayMs = (int64)Info.lookahead_ms + PlaybackMarginMs;
		Runtime->DelaySamples = DelayMs * NpcSampleRate / 1000;
		// Session sample now minus the delay: what starts playing now.
		const int64 Start = S.ClockSamples(NpcSampleRate) - Runtime->DelaySamples;
		Runtime->BaseSample = Runtime->WriteHead = Start;
		Runtime->TotalQueued = 0;
		Runtime->bVoiceStarted = true;
		VoiceComponent->Play();
	}
	const int64 Avail = VoiceWave->GetAvailableAudioByteCount() / 2;
	int64 Playhead = Runtime->BaseSample + Runtime->TotalQueued - Avail;
	// After a hitch longer than the lead the wave under-ran (silence was played): the queue-based
	// playhead lags the clock. Skip ahead so voice, server timeline and frames line up again.
	const int64 Expected = S.ClockSamples(NpcSampleRate) - Runtime->DelaySamples;
	if (Expected - Playhead > NpcSampleRate / 5)
	{
		VoiceWave->ResetAudio();
		const int64 Skip = Expected - Runtime->WriteHead;
		if (Skip > 0)
		{
			Runtime->PendingVoice.RemoveAt(0, FMath::Min<int64>(Skip, Runtime->PendingVoice.Num()));
		}
		Runtime->BaseSample = Runtime->WriteHead = Playhead = Expected;
		Runtime->TotalQueued = 0;
	}
	const int64 Target = Playhead + (int64)(AudioLeadSeconds * NpcSampleRate);
	const int64 Step = NpcSampleRate / 50;  // 20 ms pieces
	TArray<int16> Chunk;
	while (Runtime->WriteHead < Target)
	{
		const int32 N = (int32)FMath::Min<int64>(Step, Target - Runtime->WriteHead);
		Chunk.Reset();
		const int32 FromLine = Runtime->WriteHead >= 0 ? FMath::Min(N, Runtime->PendingVoice.Num()) : 0;
		if (FromLine > 0)
		{
			Chunk.Append(Runtime->PendingVoice.GetData(), FromLine);
			Runtime->PendingVoice.RemoveAt(0, FromLine, false);
			const std::string Text = Runtime->bLineStartPending ? std::string(TCHAR_TO_UTF8(*Runtime->PendingText)) : std::string();
			Runtime->bLineStartPending = false;
			S.SendAudio(lpmnpc::AudioChannel::Npc, reinterpret_cast<const int16_t*>(Chunk.GetData()), FromLine,
				(uint32)NpcSampleRate, 1, Runtime->WriteHead, Text);
		}
		Chunk.AddZeroed(N - FromLine);
		VoiceWave->QueueAudio(reinterpret_cast<const uint8*>(Chunk.GetData()), Chunk.Num() * 2);
		Runtime->TotalQueued += N;
		Runtime->WriteHead += N;
	}
#endif
}

int64 ULpmNpcComponent::PlayheadUs() const
{
#if WITH_LPMNPC_CORE
	const bool bAudible = Runtime->bVoiceStarted && VoiceComponent &&
		VoiceComponent->GetPlayState() == EAudioComponentPlayState::Playing;
	if (!bAudible)
	{
		// No audio device (or not started yet): follow the session clock instead.
		return Runtime->Session->DefaultPlayheadUs(PlaybackMarginMs);
	}
	const int64 Avail = VoiceWave->GetAvailableAudioByteCount() / 2;
	const int64 Sample = Runtime->BaseSample + Runtime->TotalQueued - Avail - (int64)OutputLatencyMs * NpcSampleRate / 1000;
	return Sample * 1000000 / NpcSampleRate;
#else
	return 0;
#endif
}

void ULpmNpcComponent::EnsureTexture(int32 Width, int32 Height)
{
	if (FaceTexture && FaceTexture->GetSizeX() == Width && FaceTexture->GetSizeY() == Height)
	{
		return;
	}
	FaceTexture = UTexture2D::CreateTransient(Width, Height, PF_B8G8R8A8);
	FaceTexture->SRGB = true;
	FaceTexture->UpdateResource();
	if (FaceMaterial)
	{
		FaceMaterial->SetTextureParameterValue(TextureParameterName, FaceTexture);
	}
}

void ULpmNpcComponent::PumpFrames()
{
#if WITH_LPMNPC_CORE
	lpmnpc::Frame F;
	if (!Runtime->Session->PollFrame(PlayheadUs(), &F))
	{
		return;
	}
	if (F.format != lpmnpc::PixelFormat::BGRA8 && F.format != lpmnpc::PixelFormat::RGBA8)
	{
		if (!Runtime->bWarnedFormat)
		{
			UE_LOG(LogLpmNpc, Warning, TEXT("frame format %d is not raw BGRA/RGBA; ask for BGRA8"), (int32)F.format);
			Runtime->bWarnedFormat = true;
		}
		return;
	}
	const int32 W = (int32)F.width, H = (int32)F.height;
	const uint32 Pitch = F.stride ? F.stride : F.width * 4;
	if (W <= 0 || H <= 0 || F.data.size() < (size_t)Pitch * H)
	{
		return;
	}
	EnsureTexture(W, H);
	// The render thread reads the bytes later: hand it its own copy, freed by the cleanup callback.
	uint8* Bytes = static_cast<uint8*>(FMemory::Malloc(F.data.size()));
	FMemory::Memcpy(Bytes, F.data.data(), F.data.size());
	if (F.format == lpmnpc::PixelFormat::RGBA8)
	{
		for (int32 y = 0; y < H; ++y)
		{
			uint8* Row = Bytes + (size_t)y * Pitch;
			for (int32 x = 0; x < W; ++x)
			{
				Swap(Row[4 * x], Row[4 * x + 2]);
			}
		}
	}
	FUpdateTextureRegion2D* Region = new FUpdateTextureRegion2D(0, 0, 0, 0, (uint32)W, (uint32)H);
	FaceTexture->UpdateTextureRegions(0, 1, Region, Pitch, 4, Bytes,
		[](uint8* Data, const FUpdateTextureRegion2D* Regions)
		{
			FMemory::Free(Data);
			delete Regions;
		});
#endif
}

void ULpmNpcComponent::PumpRig()
{
#if WITH_LPMNPC_CORE
	lpmnpc::RigFrame R;
	if (!Runtime->Session->PollRigFrame(PlayheadUs(), &R))
	{
		return;
	}
	HeadYawDeg = R.head_yaw_deg;
	HeadPitchDeg = R.head_pitch_deg;
	HeadRollDeg = R.head_roll_deg;
	Gaze = FVector2D(R.gaze_x, R.gaze_y);
	const int32 N = FMath::Min<int32>(Runtime->RigNames.Num(), (int32)R.weights.size());
	for (int32 i = 0; i < N; ++i)
	{
		const FString& Channel = Runtime->RigNames[i];
		RigWeights.Add(Channel, R.weights[i]);
		if (RigTarget)
		{
			const FName* Mapped = MorphTargetNames.Find(Channel);
			RigTarget->SetMorphTarget(Mapped ? *Mapped : FName(*Channel), R.weights[i], false);
		}
	}
#endif
}

void ULpmNpcComponent::PumpEvents()
{
#if WITH_LPMNPC_CORE
	lpmnpc::Session& S = *Runtime->Session;
	for (const lpmnpc::Event& E : S.PollEvents())
	{
		const float T = (float)(E.pts_us / 1e6);
		const FString Detail = UTF8_TO_TCHAR(E.detail.c_str());
		switch (E.type)
		{
		case lpmnpc::EventType::NpcSpeechStarted: bNpcSpeaking = true; OnSpeechStarted.Broadcast(T); break;
		case lpmnpc::EventType::NpcSpeechEnded: bNpcSpeaking = false; OnSpeechEnded.Broadcast(T); break;
		case lpmnpc::EventType::PlayerSpeechStarted: OnPlayerSpeechStarted.Broadcast(T); break;
		case lpmnpc::EventType::PlayerSpeechEnded: OnPlayerSpeechEnded.Broadcast(T); break;
		case lpmnpc::EventType::Interrupted: OnInterrupted.Broadcast(T); break;
		case lpmnpc::EventType::Backchannel: OnBackchannel.Broadcast(Detail); break;
		case lpmnpc::EventType::Connected:
		{
			Runtime->RigNames.Reset();
			for (const std::string& Name : S.Info().rig_channel_names)
			{
				Runtime->RigNames.Add(UTF8_TO_TCHAR(Name.c_str()));
			}
			OnConnected.Broadcast(Detail);
			break;
		}
		case lpmnpc::EventType::Reconnecting: OnReconnecting.Broadcast(Detail); break;
		default: break;
		}
	}
	for (const lpmnpc::Error& Err : S.PollErrors())
	{
		const FString Message = UTF8_TO_TCHAR(Err.message.c_str());
		UE_LOG(LogLpmNpc, Warning, TEXT("%s: lpm-npc error %u%s: %s"), *GetNameSafe(GetOwner()), Err.code,
			Err.fatal ? TEXT(" (fatal)") : TEXT(""), *Message);
		OnError.Broadcast((int32)Err.code, Message, Err.fatal);
	}
#endif
}

void ULpmNpcComponent::UpdateLod(float DeltaTime)
{
#if WITH_LPMNPC_CORE
	LodTimer += DeltaTime;
	if (LodTimer < 0.25f)
	{
		return;
	}
	LodTimer = 0.f;
	AActor* Owner = GetOwner();
	if (!Owner)
	{
		return;
	}
	if (bPauseWhenNotRendered)
	{
		const bool bRendered = Owner->WasRecentlyRendered(NotRenderedPauseSeconds);
		if (!bRendered && !bPausedForVisibility)
		{
			Runtime->Session->Pause();  // no frames are rendered for an NPC nobody sees; audio goes on
			bPausedForVisibility = true;
		}
		else if (bRendered && bPausedForVisibility)
		{
			Runtime->Session->Resume();
			bPausedForVisibility = false;
		}
	}
	if (LodTiers.Num() > 0)
	{
		APlayerController* PC = GetWorld() ? GetWorld()->GetFirstPlayerController() : nullptr;
		if (!PC || !PC->PlayerCameraManager)
		{
			return;
		}
		const float Distance = FVector::Dist(PC->PlayerCameraManager->GetCameraLocation(), Owner->GetActorLocation());
		int32 Tier = LodTiers.Num() - 1;
		for (int32 i = 0; i < LodTiers.Num(); ++i)
		{
			// 10% hysteresis around the current tier's edge avoids flapping.
			const float Edge = LodTiers[i].MaxDistance * (i == CurrentLodTier ? 1.1f : 1.0f);
			if (Distance <= Edge)
			{
				Tier = i;
				break;
			}
		}
		if (Tier != CurrentLodTier)
		{
			CurrentLodTier = Tier;
			SetLevelOfDetail(LodTiers[Tier].Size, LodTiers[Tier].Fps);
		}
	}
#endif
}

// -- microphone ---------------------------------------------------------------------------------

void ULpmNpcComponent::OpenMicrophone()
{
#if WITH_LPMNPC_CORE
	if (Runtime->Mic || !Runtime->Session)
	{
		return;
	}
	lpmnpc::Session* Session = Runtime->Session.get();
	Runtime->Mic = MakeUnique<Audio::FAudioCapture>();
	Audio::FAudioCaptureDeviceParams Params;  // default device, its own rate and channels, float samples
	bool bOpened = false;
#if UE_VERSION_OLDER_THAN(5, 0, 0)
	Audio::FOnCaptureFunction OnCapture = [Session](const float* Audio, int32 NumFrames, int32 NumChannels,
		int32 SampleRate, double StreamTime, bool bOverflow)
#else
	// UE 5.x: OpenAudioCaptureStream + FOnAudioCaptureFunction (OpenCaptureStream is deprecated since 5.3).
	Audio::FOnAudioCaptureFunction OnCapture = [Session](const void* InAudio, int32 NumFrames, int32 NumChannels,
		int32 SampleRate, double StreamTime, bool bOverflow)
#endif
	{
#if !UE_VERSION_OLDER_THAN(5, 0, 0)
		const float* Audio = static_cast<const float*>(InAudio);
#endif
		// Capture thread: downmix to mono s16 and hand it to the (thread-safe) session; the server
		// resamples any rate from 8 to 96 kHz.
		const int32 Channels = FMath::Max(1, NumChannels);
		std::vector<int16_t> Mono((size_t)NumFrames);
		for (int32 i = 0; i < NumFrames; ++i)
		{
			float Sum = 0.f;
			for (int32 c = 0; c < Channels; ++c)
			{
				Sum += Audio[i * Channels + c];
			}
			Mono[i] = (int16_t)FMath::Clamp(FMath::RoundToInt(Sum / Channels * 32767.f), -32768, 32767);
		}
		Session->SendAudio(lpmnpc::AudioChannel::Player, Mono.data(), Mono.size(), (uint32)SampleRate, 1);
	};
#if UE_VERSION_OLDER_THAN(5, 0, 0)
	bOpened = Runtime->Mic->OpenCaptureStream(Params, MoveTemp(OnCapture), 1024);
#else
	bOpened = Runtime->Mic->OpenAudioCaptureStream(Params, MoveTemp(OnCapture), 1024);
#endif
	if (!bOpened || !Runtime->Mic->StartStream())
	{
		UE_LOG(LogLpmNpc, Warning, TEXT("could not open the microphone; the NPC will not listen"));
		Runtime->Mic.Reset();
	}
#endif
}

void ULpmNpcComponent::CloseMicrophone()
{
	if (Runtime && Runtime->Mic)
	{
		Runtime->Mic->StopStream();
		Runtime->Mic->CloseStream();
		Runtime->Mic.Reset();
	}
}
