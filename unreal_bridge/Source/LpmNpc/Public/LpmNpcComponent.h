// ULpmNpcComponent: give any actor a performing NPC face.
//
// Frames from the lpm-npc sidecar go into a transient PF_B8G8R8A8 texture bound to a dynamic material
// on a billboard mesh; the NPC's voice plays through a USoundWaveProcedural whose playhead picks the
// frame to show; the player's microphone is streamed so the NPC listens; optional rig frames drive
// morph targets by name. No gRPC/protobuf header is reachable from here (the session lives behind a
// forward-declared pointer).
#pragma once

#include "Components/ActorComponent.h"
#include "CoreMinimal.h"
#include "LpmNpcTypes.h"
#include "LpmNpcComponent.generated.h"

class UAudioComponent;
class UMaterialInstanceDynamic;
class UMaterialInterface;
class UPrimitiveComponent;
class USkeletalMeshComponent;
class USoundWaveProcedural;
class UTexture2D;
struct FLpmNpcRuntime;

DECLARE_DYNAMIC_MULTICAST_DELEGATE_OneParam(FLpmNpcSimpleEvent, float, PtsSeconds);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_OneParam(FLpmNpcDetailEvent, const FString&, Detail);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_ThreeParams(FLpmNpcErrorEvent, int32, Code, const FString&, Message, bool, bFatal);

UCLASS(ClassGroup = (LpmNpc), meta = (BlueprintSpawnableComponent), BlueprintType, Blueprintable)
class LPMNPC_API ULpmNpcComponent : public UActorComponent
{
	GENERATED_BODY()

public:
	ULpmNpcComponent();
	virtual ~ULpmNpcComponent();

	// -- connection -----------------------------------------------------------------------------
	/** host:port of `lpm-npc serve` (the sidecar the game starts). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Connection")
	FString ServerAddress = TEXT("127.0.0.1:50051");

	/** From RegisterCharacter, or "default" for the built-in character. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Connection")
	FString CharacterId = TEXT("default");

	/** Start the session in BeginPlay. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Connection")
	bool bAutoStart = true;

	/** Continue the motion/emotion state of an earlier session (e.g. across a level change). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Connection")
	FString ResumeToken;

	// -- video ----------------------------------------------------------------------------------
	/** Starting frame size (square); LOD tiers change it at run time. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Video", meta = (ClampMin = "16", ClampMax = "1024"))
	int32 FrameSize = 512;

	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Video")
	int32 Fps = 30;

	/** Alpha = person matte, for a cut-out billboard (use a Masked or Translucent material). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Video")
	bool bAlphaMatte = true;

	/** Material with a texture parameter named TextureParameterName; a dynamic instance is made of it. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Video")
	TObjectPtr<UMaterialInterface> BillboardMaterial;

	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Video")
	FName TextureParameterName = TEXT("FaceTexture");

	/** Component tag of the billboard mesh on the owner; empty = the first static mesh component. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Video")
	FName BillboardTag = TEXT("LpmNpcBillboard");

	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Video")
	int32 BillboardMaterialIndex = 0;

	/** The texture frames are written to (valid after the first frame size is known). */
	UPROPERTY(BlueprintReadOnly, Transient, Category = "LpmNpc|Video")
	TObjectPtr<UTexture2D> FaceTexture;

	UPROPERTY(BlueprintReadOnly, Transient, Category = "LpmNpc|Video")
	TObjectPtr<UMaterialInstanceDynamic> FaceMaterial;

	// -- level of detail ------------------------------------------------------------------------
	/** Pause the stream (no frames rendered) while the owner has not been rendered for this long. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|LOD")
	bool bPauseWhenNotRendered = true;

	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|LOD")
	float NotRenderedPauseSeconds = 1.0f;

	/** Nearest first; beyond the last tier its settings are kept. Empty = no distance LOD. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|LOD")
	TArray<FLpmNpcLodTier> LodTiers;

	// -- audio ----------------------------------------------------------------------------------
	/** Clock and playback rate of the NPC's voice (SessionConfig.npc_sample_rate). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Audio")
	int32 NpcSampleRate = 16000;

	/** NPC audio is queued (and sent to the server) this far ahead of the playhead. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Audio")
	float AudioLeadSeconds = 0.2f;

	/** Extra delay of the voice behind the server clock, beyond the server's lookahead (network + render). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Audio")
	int32 PlaybackMarginMs = 60;

	/** Audio device latency: subtracted from the queue-based playhead so frames match what is heard. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Audio")
	int32 OutputLatencyMs = 40;

	/** Stream the player's microphone (Audio::FAudioCapture) so the NPC listens. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Audio")
	bool bCaptureMicrophone = true;

	UPROPERTY(BlueprintReadOnly, Transient, Category = "LpmNpc|Audio")
	TObjectPtr<UAudioComponent> VoiceComponent;

	// -- rig ------------------------------------------------------------------------------------
	/** Also receive rig frames (ARKit-style weights, head pose, gaze) and apply them to RigTarget. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Rig")
	bool bSendRig = false;

	/** Rig channel name (SessionStarted.rig_channel_names) -> morph target name; unmapped = same name. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc|Rig")
	TMap<FString, FName> MorphTargetNames;

	UPROPERTY(BlueprintReadOnly, Transient, Category = "LpmNpc|Rig")
	TObjectPtr<USkeletalMeshComponent> RigTarget;

	UPROPERTY(BlueprintReadOnly, Category = "LpmNpc|Rig")
	float HeadYawDeg = 0.f;
	UPROPERTY(BlueprintReadOnly, Category = "LpmNpc|Rig")
	float HeadPitchDeg = 0.f;
	UPROPERTY(BlueprintReadOnly, Category = "LpmNpc|Rig")
	float HeadRollDeg = 0.f;
	UPROPERTY(BlueprintReadOnly, Category = "LpmNpc|Rig")
	FVector2D Gaze = FVector2D::ZeroVector;

	// -- events ---------------------------------------------------------------------------------
	UPROPERTY(BlueprintAssignable, Category = "LpmNpc|Events")
	FLpmNpcSimpleEvent OnSpeechStarted;
	UPROPERTY(BlueprintAssignable, Category = "LpmNpc|Events")
	FLpmNpcSimpleEvent OnSpeechEnded;
	UPROPERTY(BlueprintAssignable, Category = "LpmNpc|Events")
	FLpmNpcSimpleEvent OnPlayerSpeechStarted;
	UPROPERTY(BlueprintAssignable, Category = "LpmNpc|Events")
	FLpmNpcSimpleEvent OnPlayerSpeechEnded;
	UPROPERTY(BlueprintAssignable, Category = "LpmNpc|Events")
	FLpmNpcSimpleEvent OnInterrupted;
	UPROPERTY(BlueprintAssignable, Category = "LpmNpc|Events")
	FLpmNpcDetailEvent OnBackchannel;
	/** Connected (also after a reconnect); Detail = session id. */
	UPROPERTY(BlueprintAssignable, Category = "LpmNpc|Events")
	FLpmNpcDetailEvent OnConnected;
	UPROPERTY(BlueprintAssignable, Category = "LpmNpc|Events")
	FLpmNpcDetailEvent OnReconnecting;
	UPROPERTY(BlueprintAssignable, Category = "LpmNpc|Events")
	FLpmNpcErrorEvent OnError;

	// -- Blueprint API --------------------------------------------------------------------------
	UFUNCTION(BlueprintCallable, Category = "LpmNpc")
	bool StartSession();

	/** Half-close: the NPC finishes its queued line, then the stream ends. */
	UFUNCTION(BlueprintCallable, Category = "LpmNpc")
	void FinishSession();

	UFUNCTION(BlueprintCallable, Category = "LpmNpc")
	void StopSession();

	/** Queue a line of the NPC's voice: signed 16-bit little-endian PCM (any rate, mono or stereo). */
	UFUNCTION(BlueprintCallable, Category = "LpmNpc")
	void SpeakPcm16(const TArray<uint8>& PcmS16le, int32 SampleRate, int32 NumChannels, const FString& Text);

	UFUNCTION(BlueprintCallable, Category = "LpmNpc")
	void SetPhase(ELpmNpcPhase Phase);

	UFUNCTION(BlueprintCallable, Category = "LpmNpc")
	void SetEmotion(ELpmNpcEmotion Emotion, float Intensity = 1.f, int32 TransitionMs = 300);

	/** Free-text direction, e.g. "nods slowly, a bit nervous". */
	UFUNCTION(BlueprintCallable, Category = "LpmNpc")
	void SetDirection(const FString& Direction);

	/** Barge-in: stop the NPC's line (local playback and server) and return to listening. */
	UFUNCTION(BlueprintCallable, Category = "LpmNpc")
	void Interrupt();

	UFUNCTION(BlueprintCallable, Category = "LpmNpc")
	void SetLevelOfDetail(int32 Size, int32 NewFps);

	UFUNCTION(BlueprintCallable, Category = "LpmNpc")
	void SetRigTarget(USkeletalMeshComponent* Mesh);

	UFUNCTION(BlueprintCallable, Category = "LpmNpc")
	void SetBillboard(UPrimitiveComponent* Mesh, int32 MaterialIndex = 0);

	UFUNCTION(BlueprintPure, Category = "LpmNpc")
	ELpmNpcConnection GetConnectionState() const;

	UFUNCTION(BlueprintPure, Category = "LpmNpc")
	bool IsNpcSpeaking() const { return bNpcSpeaking; }

	/** Current resume token (pass it as ResumeToken to continue this NPC later). */
	UFUNCTION(BlueprintPure, Category = "LpmNpc")
	FString GetResumeToken() const;

	/** Last weight received for a rig channel (0 if unknown). */
	UFUNCTION(BlueprintPure, Category = "LpmNpc")
	float GetRigWeight(const FString& Channel) const;

	// UActorComponent
	virtual void BeginPlay() override;
	virtual void EndPlay(const EEndPlayReason::Type EndPlayReason) override;
	virtual void TickComponent(float DeltaTime, ELevelTick TickType, FActorComponentTickFunction* ThisTickFunction) override;

private:
	void EnsureVoice();
	void PumpVoice();
	int64 PlayheadUs() const;
	void PumpFrames();
	void PumpRig();
	void PumpEvents();
	void UpdateLod(float DeltaTime);
	void EnsureTexture(int32 Width, int32 Height);
	void OpenMicrophone();
	void CloseMicrophone();

	UPROPERTY(Transient)
	TObjectPtr<USoundWaveProcedural> VoiceWave;

	TUniquePtr<FLpmNpcRuntime> Runtime;
	TMap<FString, float> RigWeights;
	bool bNpcSpeaking = false;
	bool bPausedForVisibility = false;
	int32 CurrentLodTier = -1;
	float LodTimer = 0.f;
};
