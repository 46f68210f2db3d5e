// Blueprint-facing enums and structs of the lpm-npc plugin (values = lpm_npc.v1 enum numbers).
#pragma once

#include "CoreMinimal.h"
#include "LpmNpcTypes.generated.h"

UENUM(BlueprintType)
enum class ELpmNpcPhase : uint8
{
	Unchanged = 0 UMETA(DisplayName = "Unchanged"),
	Idle = 1,
	Listening = 2,
	Thinking = 3,
	Speaking = 4,
};

UENUM(BlueprintType)
enum class ELpmNpcEmotion : uint8
{
	Unchanged = 0 UMETA(DisplayName = "Unchanged"),
	Neutral = 1,
	Happy = 2,
	Sad = 3,
	Angry = 4,
	Surprised = 5,
	Afraid = 6,
	Disgusted = 7,
};

UENUM(BlueprintType)
enum class ELpmNpcConnection : uint8
{
	Idle,
	Connecting,
	Streaming,
	Reconnecting,
	Closed,
	Failed,
};

/** One level-of-detail step: used while the camera is at most MaxDistance (cm) from the NPC. */
USTRUCT(BlueprintType)
struct FLpmNpcLodTier
{
	GENERATED_BODY()

	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc")
	float MaxDistance = 1000.f;

	/** Square frame size in pixels (16..1024). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc")
	int32 Size = 512;

	/** 10, 12, 15, 20, 24, 25, 30 or 60. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "LpmNpc")
	int32 Fps = 30;
};
